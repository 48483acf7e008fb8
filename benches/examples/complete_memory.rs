//! Resident memory of a complete graph on mem: builds the graph of
//! `snapshot_latency/mem/complete/{nodes}` (every node a thread, linked both ways to
//! every other), takes snapshots on it, and prints the process's `VmRSS` (from
//! `/proc/self/status`) before the nodes start, once they run, and after the
//! snapshots, with what that is per node; and each snapshot's latency.
//!
//! ```text
//! cargo run --release -p snapshot-benches --example complete_memory [nodes] [snapshots]
//! ```
//!
//! 256 nodes and 20 snapshots unless told.

use snapshot_benches::{GraphCluster, GraphMedium};
use snapshot_core::NodeId;
use snapshot_core::topology::Topology;
use snapshot_harness::check;
use std::time::Duration;

/// The process's resident memory, in KiB, from `/proc/self/status`.
fn rss_kib() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc/self/status".to_string())
}

fn number(arg: Option<String>, default: u32) -> Result<u32, String> {
    arg.map_or(Ok(default), |a| {
        a.parse().map_err(|_| format!("not a number: {a}"))
    })
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let nodes = number(args.next(), 256)?;
    let snapshots = number(args.next(), 20)?;
    let before = rss_kib()?;
    println!("before the nodes: {before} KiB");
    let graph = Topology::complete((1..=nodes).map(NodeId));
    let mut cluster = GraphCluster::spawn(GraphMedium::Mem, graph).map_err(|e| e.to_string())?;
    // Let every thread reach its first wait.
    std::thread::sleep(Duration::from_millis(200));
    let running = rss_kib()?;
    println!(
        "{nodes} nodes running, before any snapshot: {running} KiB, {:.1} KiB a node ({:.1} KiB a node over the process before them)",
        running as f64 / f64::from(nodes),
        (running - before) as f64 / f64::from(nodes),
    );
    let mut latencies = Vec::new();
    for k in 0..snapshots {
        let (took, global) = cluster
            .snapshot(NodeId(k % nodes + 1))
            .map_err(|e| e.to_string())?;
        check(&global).map_err(|e| e.to_string())?;
        latencies.push(took);
    }
    let after = rss_kib()?;
    println!(
        "after {snapshots} snapshots: {after} KiB, {:.1} KiB a node",
        after as f64 / f64::from(nodes),
    );
    latencies.sort();
    if let (Some(first), Some(last)) = (latencies.first(), latencies.last()) {
        println!(
            "latency: median {:?}, min {first:?}, max {last:?}",
            latencies[latencies.len() / 2]
        );
    }
    cluster.stop().map_err(|e| e.to_string())
}
