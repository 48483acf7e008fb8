//! Prints a seeded benchmark script for the bank.
//!
//! `cargo run --release -p bank-app --example workload -- NODES COMMANDS SEED > w.script`

use bank_app::workload::Workload;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or_else(|_| panic!("not a number: {a}")))
        .collect();
    let [nodes, commands, seed] = args[..] else {
        eprintln!("usage: workload NODES COMMANDS SEED");
        std::process::exit(2);
    };
    let workload = Workload {
        nodes: u32::try_from(nodes).expect("NODES fits in u32"),
        commands: usize::try_from(commands).expect("COMMANDS fits in usize"),
        seed,
    };
    print!("{}", workload.script());
}
