//! The crate's modules import one way: the crate docs list them from the top down, and
//! a module names (`crate::NAME`) only modules further down that list, so that none
//! of them imports another in a circle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The modules in the order the crate docs list them (`//! - [`NAME`]: ...`).
fn listed(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|line| line.strip_prefix("//! - [`"))
        .filter_map(|rest| rest.split_once('`').map(|(name, _)| name.to_string()))
        .filter(|name| !name.contains("::"))
        .collect()
}

/// Every source file of module `name`: `src/NAME.rs`, and `src/NAME/**.rs`.
fn files(src: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let file = src.join(format!("{name}.rs"));
    if file.is_file() {
        found.push(file);
    }
    let mut dirs = vec![src.join(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found
}

/// The crate's modules that `text` names as `crate::NAME`, or in a
/// `use crate::{A, B::..}` group.
fn named(text: &str, modules: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        let heads: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                group.split(',').map(str::trim).collect()
            }
            None => vec![rest],
        };
        for head in heads {
            let name: String = head
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// For each listed module, the modules above or beside it that it names.
fn upward(src: &Path) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let order = listed(&lib);
    let mut wrong = BTreeMap::new();
    for (rank, module) in order.iter().enumerate() {
        for file in files(src, module) {
            let text = std::fs::read_to_string(&file).expect("a source file");
            // Comments (doc links among them) import nothing.
            let code: String = text
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .map(|line| format!("{line}\n"))
                .collect();
            for name in named(&code, &order) {
                let theirs = order.iter().position(|m| *m == name).unwrap_or(rank);
                if theirs < rank {
                    wrong
                        .entry(format!("{module} ({})", file.display()))
                        .or_insert_with(Vec::new)
                        .push(name);
                }
            }
        }
    }
    (order, wrong)
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (order, wrong) = upward(&src);
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    // Every module of the crate is in the list.
    for line in lib.lines() {
        if let Some(module) = line.strip_prefix("pub mod ") {
            let module = module.trim_end_matches(';');
            assert!(order.iter().any(|m| m == module), "{module} is not listed");
        }
    }
    assert!(wrong.is_empty(), "modules that import upward: {wrong:#?}");
}

#[test]
fn an_upward_import_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(
        src.join("lib.rs"),
        "//! - [`top`]: above\n//! - [`bottom`]: below\npub mod top;\npub mod bottom;\n",
    )
    .unwrap();
    std::fs::write(src.join("top.rs"), "use crate::bottom::Thing;\n").unwrap();
    // Named in a comment only: not an import.
    std::fs::write(
        src.join("bottom.rs"),
        "//! See [`crate::top`].\nmod inner;\n",
    )
    .unwrap();
    std::fs::create_dir(src.join("bottom")).unwrap();
    std::fs::write(
        src.join("bottom").join("inner.rs"),
        "use crate::{top::Other, bottom};\n",
    )
    .unwrap();
    let (order, wrong) = upward(src);
    assert_eq!(order, ["top", "bottom"]);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert_eq!(wrong.values().next().unwrap(), &["top"]);
}
