//! The deployment under `deploy/` agrees with itself and with the `master` binary.
//!
//! The Kubernetes manifests are read with a YAML parser and checked against each other:
//! the headless Service is the one the StatefulSet names, it selects the node pods
//! (and not the master's), each node runs `master node` with its pod ordinal as
//! `--id`, listens on the Service's port, in the cluster `cluster.txt` names, with the
//! certificates of the Secret mounted where `--ca`, `--cert` and `--key-file` point;
//! the master Job reads the cluster file and the script from the ConfigMap, whose
//! cluster file, read with the master's own parser, names every pod by its ordinal
//! and its host name. Every flag the manifests pass is then
//! looked up in the binary's own `--help`, and the Secret's file names are compared
//! with what `master certs` writes.
//!
//! Nothing here needs a network, Docker or kubectl.

use bank_app::systems::cluster::{ClusterFile, NodeAddress};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use wait_timeout::ChildExt;

/// The flags of a cluster run over TLS. Named apart in a failure, so that a binary
/// without them says so.
const TLS_FLAGS: [&str; 3] = ["--ca", "--cert", "--key-file"];

/// The downward API's field that holds a StatefulSet pod's ordinal.
const POD_INDEX: &str = "metadata.labels['apps.kubernetes.io/pod-index']";

/// How long a `master` started here may take.
const DEADLINE: Duration = Duration::from_secs(60);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The files `master certs --nodes NODES` writes.
fn certs_files(nodes: impl IntoIterator<Item = u64>) -> BTreeSet<String> {
    let mut files: BTreeSet<String> = ["ca.pem", "ca-key.pem", "master.pem", "master-key.pem"]
        .map(String::from)
        .into();
    for node in nodes {
        files.insert(format!("node-{node}.pem"));
        files.insert(format!("node-{node}-key.pem"));
    }
    files
}

/// Every object (YAML document) of a file.
fn read_objects(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|error| panic!("{} is not YAML: {error}", path.display()))
        })
        .filter(|object| !object.is_null())
        .collect()
}

fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

fn number(value: &Value, what: &str) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{what} is not a number: {value:?}"))
}

fn list<'a>(value: &'a Value, what: &str) -> &'a [Value] {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("{what} is not a list: {value:?}"))
}

fn strings(value: &Value, what: &str) -> Vec<String> {
    if value.is_null() {
        return Vec::new();
    }
    list(value, what)
        .iter()
        .map(|word| text(word, what).to_string())
        .collect()
}

/// A map of strings, such as labels or a selector.
fn labels(value: &Value, what: &str) -> BTreeMap<String, String> {
    value
        .as_mapping()
        .unwrap_or_else(|| panic!("{what} is not a map: {value:?}"))
        .iter()
        .map(|(key, value)| (text(key, what).to_string(), text(value, what).to_string()))
        .collect()
}

/// Whether `selector` selects a pod labelled `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The objects of the kustomization, and the master Job apart.
struct Deployment {
    objects: Vec<Value>,
    job: Value,
}

impl Deployment {
    fn read() -> Self {
        let dir = deploy_dir().join("kubernetes");
        let kustomization = read_objects(&dir.join("kustomization.yaml"));
        assert_eq!(kustomization.len(), 1, "kustomization.yaml: one document");
        let resources = strings(&kustomization[0]["resources"], "kustomization resources");
        assert!(
            !resources.is_empty(),
            "the kustomization lists no resources"
        );
        let objects = resources
            .iter()
            .flat_map(|file| read_objects(&dir.join(file)))
            .collect();
        let mut jobs = read_objects(&dir.join("bank-master-job.yaml"));
        assert_eq!(jobs.len(), 1, "bank-master-job.yaml: one document");
        let job = jobs.remove(0);
        assert_eq!(text(&job["kind"], "the Job's kind"), "Job");
        Deployment { objects, job }
    }

    fn find(&self, kind: &str) -> &Value {
        let found: Vec<&Value> = self
            .objects
            .iter()
            .filter(|object| object["kind"].as_str() == Some(kind))
            .collect();
        assert_eq!(found.len(), 1, "the kustomization has one {kind}");
        found[0]
    }

    fn statefulset(&self) -> &Value {
        self.find("StatefulSet")
    }

    fn service(&self) -> &Value {
        self.find("Service")
    }

    fn configmap(&self, name: &str) -> &Value {
        let map = self.find("ConfigMap");
        assert_eq!(text(&map["metadata"]["name"], "the ConfigMap's name"), name);
        map
    }

    fn replicas(&self) -> u64 {
        number(&self.statefulset()["spec"]["replicas"], "replicas")
    }

    /// The Service's port, by name and number.
    fn service_port(&self) -> (String, u64) {
        let ports = list(&self.service()["spec"]["ports"], "the Service's ports");
        assert_eq!(ports.len(), 1, "the Service has one port");
        let port = &ports[0];
        (
            text(&port["name"], "the Service port's name").to_string(),
            number(&port["port"], "the Service's port"),
        )
    }
}

/// The single container of a pod template.
fn container(pod: &Value) -> &Value {
    let containers = list(&pod["spec"]["containers"], "containers");
    assert_eq!(containers.len(), 1, "the pod has one container");
    &containers[0]
}

/// A command line after `master`: its flags, each with its value, and its positional
/// arguments. Every flag the manifests pass takes a value.
#[derive(Debug)]
struct Invocation {
    flags: BTreeMap<String, String>,
    positional: Vec<String>,
}

impl Invocation {
    fn of(container: &Value) -> Self {
        let mut words = strings(&container["command"], "command");
        words.extend(strings(&container["args"], "args"));
        assert_eq!(
            words.first().map(String::as_str),
            Some("master"),
            "the container runs `master` directly: {words:?}"
        );
        let mut flags = BTreeMap::new();
        let mut positional = Vec::new();
        let mut rest = words[1..].iter();
        while let Some(word) = rest.next() {
            if let Some(flag) = word.strip_prefix("--") {
                let (flag, value) = match flag.split_once('=') {
                    Some((flag, value)) => (flag, value.to_string()),
                    None => {
                        let value = rest
                            .next()
                            .unwrap_or_else(|| panic!("--{flag} has no value"));
                        (flag, value.clone())
                    }
                };
                let twice = flags.insert(format!("--{flag}"), value);
                assert!(twice.is_none(), "--{flag} is passed twice");
            } else {
                positional.push(word.clone());
            }
        }
        Invocation { flags, positional }
    }

    fn flag(&self, flag: &str) -> &str {
        self.flags
            .get(flag)
            .unwrap_or_else(|| panic!("{flag} is not passed: {self:?}"))
    }
}

/// The container's variable that a `fieldRef` fills, named by `$(NAME)` in `word`.
fn variable_from_field<'a>(container: &Value, word: &'a str, field: &str) -> &'a str {
    let name = word
        .strip_prefix("$(")
        .and_then(|word| word.split_once(')'))
        .map(|(name, _)| name)
        .unwrap_or_else(|| panic!("{word:?} does not start with a $(VARIABLE)"));
    let env = list(&container["env"], "env");
    let variable = env
        .iter()
        .find(|variable| variable["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no variable {name} in the container's env"));
    assert_eq!(
        text(
            &variable["valueFrom"]["fieldRef"]["fieldPath"],
            "the variable's fieldPath"
        ),
        field,
        "{name} is filled from {field}"
    );
    name
}

/// `word` with `$(name)` replaced by `value`, as Kubernetes expands arguments.
fn expand(word: &str, name: &str, value: &str) -> String {
    word.replace(&format!("$({name})"), value)
}

/// Where a file the container reads comes from: the kind of its volume's source
/// (`secret` or `configMap`), that object's name, and the key whose content it is.
fn source_of(pod: &Value, path: &str) -> (String, String, String) {
    let container = container(pod);
    let mounts = list(&container["volumeMounts"], "volumeMounts");
    let (mount, file) = mounts
        .iter()
        .find_map(|mount| {
            let dir = text(&mount["mountPath"], "mountPath").trim_end_matches('/');
            let file = path.strip_prefix(dir)?.strip_prefix('/')?;
            Some((mount, file))
        })
        .unwrap_or_else(|| panic!("{path} is in no volume the container mounts"));
    assert_eq!(
        mount["readOnly"].as_bool(),
        Some(true),
        "the volume of {path} is mounted read-only"
    );
    let volume_name = text(&mount["name"], "the mount's name");
    let volume = list(&pod["spec"]["volumes"], "volumes")
        .iter()
        .find(|volume| volume["name"].as_str() == Some(volume_name))
        .unwrap_or_else(|| panic!("no volume {volume_name}"));
    let (kind, source, name) = if !volume["secret"].is_null() {
        let secret = &volume["secret"];
        ("secret", secret, text(&secret["secretName"], "secretName"))
    } else if !volume["configMap"].is_null() {
        let map = &volume["configMap"];
        ("configMap", map, text(&map["name"], "the ConfigMap's name"))
    } else {
        panic!("the volume {volume_name} is neither a Secret nor a ConfigMap")
    };
    let key = if source["items"].is_null() {
        file.to_string()
    } else {
        let items = list(&source["items"], "items");
        let item = items
            .iter()
            .find(|item| item["path"].as_str() == Some(file))
            .unwrap_or_else(|| panic!("the volume {volume_name} has no item for {path}"));
        text(&item["key"], "the item's key").to_string()
    };
    (kind.to_string(), name.to_string(), key)
}

/// The keys of a Secret volume's items: what it mounts of the Secret.
fn secret_items(pod: &Value) -> BTreeSet<String> {
    list(&pod["spec"]["volumes"], "volumes")
        .iter()
        .filter(|volume| !volume["secret"].is_null())
        .flat_map(|volume| list(&volume["secret"]["items"], "the Secret volume's items"))
        .map(|item| text(&item["key"], "the item's key").to_string())
        .collect()
}

/// The ConfigMap's cluster file as the master reads it (`ClusterFile::parse`, the
/// parser of `--cluster`): its name, and each node's id and address.
fn cluster_file(text: &str) -> (String, BTreeMap<u64, NodeAddress>) {
    let file = ClusterFile::parse(text)
        .unwrap_or_else(|error| panic!("the master refuses cluster.txt: {error:#}"));
    let nodes = file
        .nodes
        .into_iter()
        .map(|(id, entry)| (u64::from(id.0), entry.address))
        .collect();
    (file.name, nodes)
}

/// Runs the built `master` with `args`, and returns what it printed.
fn run_master(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_master"))
        .args(args)
        .env_remove("SNAPSHOT_RS_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start master");
    match child
        .wait_timeout(DEADLINE)
        .expect("cannot wait for master")
    {
        Some(_) => child
            .wait_with_output()
            .expect("cannot read master's output"),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`master {}` did not end within {DEADLINE:?}",
                args.join(" ")
            );
        }
    }
}

/// The help text of `master ARGS --help`.
fn help(args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.push("--help");
    let output = run_master(&args);
    assert!(
        output.status.success(),
        "`master {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the help is UTF-8")
}

/// Whether `help` lists `flag` (and not just a longer flag that starts with it).
fn lists(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(at, _)| {
        let before = help[..at].chars().next_back();
        let after = help[at + flag.len()..].chars().next();
        !matches!(before, Some(c) if c.is_alphanumeric() || c == '-')
            && !matches!(after, Some(c) if c.is_alphanumeric() || c == '-')
    })
}

/// Fails, naming every flag of `flags` that `master ARGS --help` does not list, with
/// the TLS flags apart.
fn assert_accepted<'a>(args: &[&str], flags: impl IntoIterator<Item = &'a String>) {
    let help = help(args);
    let missing: Vec<&str> = flags
        .into_iter()
        .map(String::as_str)
        .filter(|flag| !lists(&help, flag))
        .collect();
    if missing.is_empty() {
        return;
    }
    let (tls, other): (Vec<&str>, Vec<&str>) =
        missing.iter().partition(|flag| TLS_FLAGS.contains(flag));
    let command = format!("master {}", args.join(" ")).trim_end().to_string();
    let mut report = Vec::new();
    if !tls.is_empty() {
        report.push(format!(
            "the TLS flags {} (a cluster run over TLS needs them)",
            tls.join(", ")
        ));
    }
    if !other.is_empty() {
        report.push(format!("the flags {}", other.join(", ")));
    }
    panic!(
        "`{command} --help` does not list {}, which deploy/kubernetes passes",
        report.join(", nor ")
    );
}

#[test]
fn the_service_is_headless_and_selects_the_node_pods() {
    let deployment = Deployment::read();
    let service = deployment.service();
    let set = deployment.statefulset();
    let name = text(&service["metadata"]["name"], "the Service's name");
    assert_eq!(name, "bank");
    assert_eq!(
        text(&set["spec"]["serviceName"], "serviceName"),
        name,
        "the StatefulSet names the Service that gives its pods their DNS names"
    );
    assert_eq!(
        text(&service["spec"]["clusterIP"], "clusterIP"),
        "None",
        "the Service is headless: each node has its own address"
    );
    assert_eq!(
        text(&set["metadata"]["name"], "the StatefulSet's name"),
        "bank-node"
    );
    assert_eq!(deployment.replicas(), 3);
    assert_eq!(
        text(&set["spec"]["podManagementPolicy"], "podManagementPolicy"),
        "Parallel"
    );

    let pod_labels = labels(&set["spec"]["template"]["metadata"]["labels"], "pod labels");
    let selector = labels(&service["spec"]["selector"], "the Service's selector");
    let set_selector = labels(
        &set["spec"]["selector"]["matchLabels"],
        "the StatefulSet's selector",
    );
    assert!(
        selects(&selector, &pod_labels),
        "the Service selects the node pods"
    );
    assert!(
        selects(&set_selector, &pod_labels),
        "the StatefulSet selects its own pods"
    );
    let job_labels = labels(
        &deployment.job["spec"]["template"]["metadata"]["labels"],
        "the Job's pod labels",
    );
    assert!(
        !selects(&selector, &job_labels) && !selects(&set_selector, &job_labels),
        "the master's pod is not taken for a node"
    );

    // The Service's port is the container's.
    let (port_name, port) = deployment.service_port();
    assert_eq!(port, 7000);
    let target = &list(&service["spec"]["ports"], "ports")[0]["targetPort"];
    let ports = list(&container(&set["spec"]["template"])["ports"], "ports");
    let container_port = ports
        .iter()
        .find(|p| match target.as_str() {
            Some(name) => p["name"].as_str() == Some(name),
            None => p["containerPort"].as_u64() == target.as_u64(),
        })
        .unwrap_or_else(|| panic!("no container port is the Service's {port_name}"));
    assert_eq!(
        number(&container_port["containerPort"], "containerPort"),
        port
    );
}

#[test]
fn each_node_runs_master_node_with_its_ordinal_and_its_certificates() {
    let deployment = Deployment::read();
    let set = deployment.statefulset();
    let pod = &set["spec"]["template"];
    let node = container(pod);
    let invocation = Invocation::of(node);
    assert_eq!(
        invocation.positional,
        ["node"],
        "the container runs `master node`"
    );

    // --id is the pod's ordinal, from the StatefulSet's label through the downward API.
    let id = invocation.flag("--id");
    let variable = variable_from_field(node, id, POD_INDEX);
    assert_eq!(id, format!("$({variable})"), "--id is the ordinal alone");

    // --listen: every address of the pod, on the Service's port.
    let (_, port) = deployment.service_port();
    let listen = invocation.flag("--listen");
    let (host, listen_port) = listen.rsplit_once(':').expect("--listen is HOST:PORT");
    assert_eq!(
        host, "0.0.0.0",
        "a node listens on every address of its pod"
    );
    assert_eq!(
        listen_port.parse::<u64>().ok(),
        Some(port),
        "--listen {listen}"
    );

    // --cluster: the name the master's cluster file gives.
    let map = deployment.configmap("bank-script");
    let (cluster, _) = cluster_file(text(&map["data"]["cluster.txt"], "cluster.txt"));
    assert_eq!(invocation.flag("--cluster"), cluster);
    assert_eq!(cluster, "bank");

    // Each node's certificates are its own, from the Secret that `master certs` fills.
    let written = certs_files(0..deployment.replicas());
    for ordinal in 0..deployment.replicas() {
        let ordinal_text = ordinal.to_string();
        for (flag, file) in [
            ("--ca", "ca.pem".to_string()),
            ("--cert", format!("node-{ordinal}.pem")),
            ("--key-file", format!("node-{ordinal}-key.pem")),
        ] {
            let path = expand(invocation.flag(flag), variable, &ordinal_text);
            assert!(
                !path.contains("$("),
                "{flag} {path}: only ${variable} is set"
            );
            let (kind, name, key) = source_of(pod, &path);
            assert_eq!(
                (kind.as_str(), name.as_str()),
                ("secret", "bank-certs"),
                "{path}"
            );
            assert_eq!(key, file, "node {ordinal}'s {flag} is {file}");
            assert!(written.contains(&key), "`master certs` writes {key}");
        }
    }
    let mounted = secret_items(pod);
    assert!(
        mounted.is_subset(&written),
        "every file mounted is one `master certs` writes: {mounted:?}"
    );
    for private in ["ca-key.pem", "master-key.pem"] {
        assert!(!mounted.contains(private), "a node is not given {private}");
    }
}

#[test]
fn the_cluster_file_names_every_pod_by_its_ordinal_and_the_script_uses_them() {
    let deployment = Deployment::read();
    let set = deployment.statefulset();
    let service = text(
        &deployment.service()["metadata"]["name"],
        "the Service's name",
    );
    let set_name = text(&set["metadata"]["name"], "the StatefulSet's name");
    let (_, port) = deployment.service_port();
    let map = deployment.configmap("bank-script");
    let (_, nodes) = cluster_file(text(&map["data"]["cluster.txt"], "cluster.txt"));
    let ids: Vec<u64> = nodes.keys().copied().collect();
    assert_eq!(
        ids,
        (0..deployment.replicas()).collect::<Vec<_>>(),
        "cluster.txt names the pods' ordinals, each once"
    );
    for (id, address) in &nodes {
        // <pod>.<service>, or the same with the namespace's domain after it: a pod's
        // address changes when it is made anew, its name does not.
        let NodeAddress::Name {
            host,
            port: address_port,
        } = address
        else {
            panic!("node {id} is named by its address, {address}, not by its pod's name");
        };
        let pod = format!("{set_name}-{id}.{service}");
        assert!(
            *host == pod || host.starts_with(&format!("{pod}.")),
            "node {id} is {pod}, not {host}"
        );
        assert_eq!(u64::from(*address_port), port, "{address}");
    }

    let script = text(&map["data"]["script.txt"], "script.txt");
    let mut created = BTreeSet::new();
    for (index, line) in script.lines().enumerate() {
        let command = bank_app::script::parse_line(line.as_bytes())
            .unwrap_or_else(|error| panic!("script.txt line {}: {error}", index + 1));
        if let Some(bank_app::script::Command::CreateNode { node, .. }) = command {
            created.insert(u64::from(node.0));
        }
    }
    assert_eq!(
        created,
        nodes.keys().copied().collect::<BTreeSet<_>>(),
        "the script creates every node of the cluster file, and no other"
    );
}

#[test]
fn the_master_job_reads_the_configmap_and_the_master_certificates() {
    let deployment = Deployment::read();
    let pod = &deployment.job["spec"]["template"];
    let master = container(pod);
    let invocation = Invocation::of(master);
    assert_eq!(invocation.flag("--transport"), "tcp");

    // The cluster file and the script are the ConfigMap's.
    let map = deployment.configmap("bank-script");
    assert_eq!(invocation.positional.len(), 1, "one script");
    for (path, key) in [
        (invocation.flag("--cluster"), "cluster.txt"),
        (invocation.positional[0].as_str(), "script.txt"),
    ] {
        let source = source_of(pod, path);
        assert_eq!(
            source,
            (
                "configMap".to_string(),
                "bank-script".to_string(),
                key.to_string()
            ),
            "{path}"
        );
        assert!(map["data"][key].is_string(), "the ConfigMap holds {key}");
    }

    // The master tells the nodes where it listens: the pod's own address.
    let listen = invocation.flag("--listen");
    let (host, port) = listen.rsplit_once(':').expect("--listen is HOST:PORT");
    let variable = variable_from_field(master, host, "status.podIP");
    assert_eq!(host, format!("$({variable})"));
    assert!(port.parse::<u16>().is_ok(), "--listen {listen}");

    for (flag, file) in [
        ("--ca", "ca.pem"),
        ("--cert", "master.pem"),
        ("--key-file", "master-key.pem"),
    ] {
        let source = source_of(pod, invocation.flag(flag));
        assert_eq!(
            source,
            (
                "secret".to_string(),
                "bank-certs".to_string(),
                file.to_string()
            ),
            "{flag}"
        );
    }
    let mounted = secret_items(pod);
    assert!(
        mounted.is_subset(&certs_files(0..deployment.replicas())),
        "every file mounted is one `master certs` writes: {mounted:?}"
    );
    assert!(
        !mounted.contains("ca-key.pem"),
        "the master is not given the CA's key"
    );
}

#[test]
fn the_image_runs_master_as_the_user_the_pods_run_as() {
    let deployment = Deployment::read();
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile"))
        .expect("cannot read deploy/Dockerfile");
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
    assert!(
        dockerfile.contains("cargo build --release -p bank-app --locked"),
        "the image builds bank-app from the lock file"
    );
    assert!(
        lines.iter().any(
            |line| line.starts_with("COPY --from=") && line.ends_with(" /usr/local/bin/master")
        ),
        "the binary is /usr/local/bin/master"
    );
    assert!(lines.contains(&r#"ENTRYPOINT ["master"]"#));
    let user = lines
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("the image names its user");
    let (uid, gid) = user.split_once(':').expect("USER UID:GID");
    for (what, pod) in [
        ("the nodes", &deployment.statefulset()["spec"]["template"]),
        ("the master", &deployment.job["spec"]["template"]),
    ] {
        let context = &pod["spec"]["securityContext"];
        assert_eq!(context["runAsNonRoot"].as_bool(), Some(true), "{what}");
        assert_eq!(
            number(&context["runAsUser"], "runAsUser").to_string(),
            uid,
            "{what}"
        );
        assert_eq!(
            number(&context["runAsGroup"], "runAsGroup").to_string(),
            gid,
            "{what}"
        );
    }
}

#[test]
fn every_flag_the_nodes_are_given_is_one_master_node_accepts() {
    let deployment = Deployment::read();
    let invocation = Invocation::of(container(&deployment.statefulset()["spec"]["template"]));
    assert_accepted(&["node"], invocation.flags.keys());
}

#[test]
fn every_flag_the_master_job_is_given_is_one_master_accepts() {
    let deployment = Deployment::read();
    let invocation = Invocation::of(container(&deployment.job["spec"]["template"]));
    assert_accepted(&[], invocation.flags.keys());
}

#[test]
fn the_secret_holds_the_files_master_certs_writes() {
    let deployment = Deployment::read();
    let nodes: Vec<String> = (0..deployment.replicas()).map(|n| n.to_string()).collect();
    let dir = tempfile::tempdir().expect("cannot make a temporary directory");
    let out = dir.path().join("certs");
    let out_text = out.to_str().expect("a UTF-8 path");
    let args = [
        "certs",
        "--cluster",
        "bank",
        "--nodes",
        &nodes.join(","),
        "--out",
        out_text,
    ];
    let output = run_master(&args);
    assert!(
        output.status.success(),
        "the Secret bank-certs is made of what `master certs` writes, and `master {}` \
         failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let written: BTreeSet<String> = std::fs::read_dir(&out)
        .expect("`master certs` made its directory")
        .map(|entry| entry.expect("a directory entry").file_name())
        .map(|name| name.into_string().expect("a UTF-8 file name"))
        .collect();
    assert_eq!(
        written,
        certs_files(0..deployment.replicas()),
        "the files `master certs` writes"
    );
    for pod in [
        &deployment.statefulset()["spec"]["template"],
        &deployment.job["spec"]["template"],
    ] {
        let mounted = secret_items(pod);
        assert!(
            mounted.is_subset(&written),
            "mounted but not written: {:?}",
            mounted.difference(&written).collect::<Vec<_>>()
        );
    }
}
