//! Every role a thread of the master's process, on a [`MemNetwork`].

use crate::protocol::{MASTER, Wire};
use crate::role::Role;
use crate::system::{Started, System};
use anyhow::Context;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rustix::process::Pid;
use rustix::thread::CpuSet;
use snapshot_core::Transport;
use std::thread::JoinHandle;
use std::time::Duration;
use transport_mem::MemNetwork;

/// Every role a thread, on a [`MemNetwork`].
pub struct MemSystem {
    network: MemNetwork<Wire>,
    /// The master's address, which every role connects to.
    master: String,
    threads: Vec<JoinHandle<()>>,
    /// Every role thread holds a clone and drops it as it ends, so that shutdown can
    /// wait for all of them with one deadline.
    alive: Option<Sender<()>>,
    all_done: Receiver<()>,
    /// Whether the master keeps a core to itself (see [`with_master_core`]).
    ///
    /// [`with_master_core`]: MemSystem::with_master_core
    master_core: bool,
    /// Where the master and the roles run, once the master's thread has claimed its
    /// core.
    placement: Option<Placement>,
}

impl MemSystem {
    /// A system whose master keeps the core it runs on to itself, and whose role
    /// threads run on the other cores the process may use.
    ///
    /// The master polls for each answer a while before it sleeps. A role thread that
    /// the scheduler wakes on the master's core waits behind that polling, so a run
    /// takes longer each time that happens, and how often it happens varies from run
    /// to run. With the cores apart, the woken role never waits for the master's core.
    ///
    /// The master's thread (the one that opens the master's endpoint) is pinned to its
    /// core until [`shutdown`](System::shutdown), which gives it back the cores it had.
    /// With fewer than two cores to use, or if the process may not set where its
    /// threads run, nothing is pinned. A thread that the master's thread starts once
    /// pinned begins on its core alone, as Linux has it: the role threads are started
    /// with its former cores and then moved off its core, but any other thread is
    /// best started before (`master` starts its script reader first). Meant for a
    /// process that runs one bank at a time, as `master` does: several in one process
    /// would share the cores left to roles while each master holds one.
    pub fn with_master_core() -> Self {
        let mut system = MemSystem::default();
        system.master_core = true;
        system
    }
}

/// Where the master's thread and the role threads run.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Placement {
    /// The cores the master's thread had before it was pinned.
    before: CpuSet,
    /// The master's core.
    master: usize,
    /// Every other core the master's thread could use.
    roles: CpuSet,
    /// The master's thread, once pinned.
    thread: Option<Pid>,
}

impl Placement {
    /// Splits `allowed` into the master's core and the roles': the master keeps
    /// `current`, the core it runs on, if it may use it (the lowest it may use
    /// otherwise). `None` with fewer than two cores.
    fn split(allowed: CpuSet, current: usize) -> Option<Placement> {
        if allowed.count() < 2 {
            return None;
        }
        let master = if current < CpuSet::MAX_CPU && allowed.is_set(current) {
            current
        } else {
            (0..CpuSet::MAX_CPU).find(|&cpu| allowed.is_set(cpu))?
        };
        let mut roles = allowed;
        roles.unset(master);
        Some(Placement {
            before: allowed,
            master,
            roles,
            thread: None,
        })
    }

    /// Only the master's core.
    fn master_only(&self) -> CpuSet {
        let mut only = CpuSet::new();
        only.set(self.master);
        only
    }

    /// Pins the calling thread (the master's) to its core, if it can use two or more.
    fn claim() -> Option<Placement> {
        let allowed = rustix::thread::sched_getaffinity(None).ok()?;
        let mut placement = Placement::split(allowed, current_core().unwrap_or(usize::MAX))?;
        match rustix::thread::sched_setaffinity(None, &placement.master_only()) {
            Ok(()) => {
                placement.thread = Some(rustix::thread::gettid());
                Some(placement)
            }
            Err(error) => {
                tracing::debug!(%error, "the master's thread cannot be pinned; it shares the cores");
                None
            }
        }
    }

    /// Keeps the calling thread (a role's) off the master's core; if it cannot, gives
    /// it every core the master had, rather than leave it on the master's alone.
    fn enter_role(&self) {
        if let Err(error) = rustix::thread::sched_setaffinity(None, &self.roles) {
            tracing::debug!(%error, "a role thread cannot be kept off the master's core");
            let _ = rustix::thread::sched_setaffinity(None, &self.before);
        }
    }

    /// Whether the calling thread is the master's, pinned.
    fn on_master_thread(&self) -> bool {
        self.thread == Some(rustix::thread::gettid())
    }

    /// Runs `spawn` from the master's thread with all its former cores, so that the
    /// thread it starts does not begin on the master's core alone, behind the master's
    /// polling.
    fn widened<T>(&self, spawn: impl FnOnce() -> T) -> T {
        if !self.on_master_thread() {
            return spawn();
        }
        let _ = rustix::thread::sched_setaffinity(None, &self.before);
        let spawned = spawn();
        let _ = rustix::thread::sched_setaffinity(None, &self.master_only());
        spawned
    }

    /// Gives the master's thread back the cores it had.
    fn release(&self) {
        let Some(thread) = self.thread else {
            return;
        };
        if let Err(error) = rustix::thread::sched_setaffinity(Some(thread), &self.before) {
            tracing::debug!(%error, "the master's thread cannot get its cores back");
        }
    }
}

/// The core the calling thread last ran on, from `/proc/thread-self/stat` (its 39th
/// field). Read there rather than through the vDSO's `getcpu`, which tools that run
/// the program on a virtual processor, such as valgrind, do not map where it expects.
fn current_core() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name, field 2, is in parentheses and may hold spaces: count the
    // fields from the last `)`, after which comes field 3.
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(39 - 3)?.parse().ok()
}

impl Default for MemSystem {
    fn default() -> Self {
        let (alive, all_done) = crossbeam_channel::bounded(0);
        MemSystem {
            // Nodes take node-to-node frames only when the master says `Take`, and the
            // master says it only after the sender has acknowledged the frame: waking
            // them for it would be wasted.
            network: MemNetwork::with_deferred_node_frames(),
            master: String::new(),
            threads: Vec::new(),
            alive: Some(alive),
            all_done,
            master_core: false,
            placement: None,
        }
    }
}

/// How long the master polls for an answer before it sleeps: a command's round trip
/// through a node thread takes a few microseconds when nobody sleeps.
const MASTER_SPIN: Duration = Duration::from_micros(50);

/// How long shutdown waits for the role threads. A thread still running after that
/// (stuck in a bug) ends with the process.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Threads are cheap but not free: this bounds a run's memory and start-up time.
const MAX_NODES: usize = 256;

impl System for MemSystem {
    fn master(&mut self) -> anyhow::Result<Box<dyn Transport<Wire>>> {
        let mut master = self.network.endpoint(MASTER)?;
        if self.master_core && self.placement.is_none() {
            self.placement = Placement::claim();
        }
        // The master waits for one quick answer at a time; nodes are many and mostly
        // idle, so only the master spins.
        master.set_spin(MASTER_SPIN);
        self.master = master.address();
        Ok(Box::new(master))
    }

    fn start(&mut self, role: Role) -> anyhow::Result<Started> {
        let mut transport = self.network.endpoint(role.endpoint())?;
        transport.connect(MASTER, &self.master)?;
        let address = transport.address();
        let name = match role {
            Role::Observer => "observer".to_string(),
            Role::Node(id) => format!("node-{id}"),
        };
        let alive = self.alive.clone();
        let placement = self.placement.clone();
        let spawn = move || {
            std::thread::Builder::new()
                .name(name)
                .stack_size(256 * 1024)
                .spawn(move || {
                    if let Some(placement) = &placement {
                        placement.enter_role();
                    }
                    // A failure has been told to the master, which reports it.
                    let _ = super::run_role(role, &mut transport);
                    drop(alive);
                })
        };
        let thread = match &self.placement {
            Some(placement) => placement.widened(spawn),
            None => spawn(),
        }
        .context("cannot start a thread")?;
        self.threads.push(thread);
        Ok(Started {
            address: Some(address),
            attach: false,
        })
    }

    fn max_nodes(&self) -> usize {
        MAX_NODES
    }

    fn shutdown(&mut self) -> Result<(), String> {
        if let Some(placement) = self.placement.take() {
            placement.release();
        }
        self.alive = None;
        // Nothing is ever sent on this channel: it disconnects when the last role
        // thread has dropped its handle.
        if self.all_done.recv_timeout(SHUTDOWN_GRACE) == Err(RecvTimeoutError::Timeout) {
            tracing::error!("role threads did not stop; they end with the process");
            return Ok(());
        }
        for thread in self.threads.drain(..) {
            // A role that panicked has already reported it to the master.
            let _ = thread.join();
        }
        Ok(())
    }
}

impl Drop for MemSystem {
    /// A system dropped without a shutdown, on the master's thread, gives it back its
    /// cores all the same. (On another thread, that thread's id could by then be
    /// another's: the master's thread keeps its core.)
    fn drop(&mut self) {
        if let Some(placement) = self.placement.take()
            && placement.on_master_thread()
        {
            placement.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores(list: &[usize]) -> CpuSet {
        let mut set = CpuSet::new();
        for &cpu in list {
            set.set(cpu);
        }
        set
    }

    #[test]
    fn the_master_keeps_its_core_and_the_roles_get_the_others() {
        let placement = Placement::split(cores(&[0, 1, 2, 3]), 2).expect("four cores");
        assert_eq!(placement.master, 2);
        assert_eq!(placement.roles, cores(&[0, 1, 3]));
        assert_eq!(placement.before, cores(&[0, 1, 2, 3]));
        let placement = Placement::split(cores(&[0, 1]), 0).expect("two cores");
        assert_eq!((placement.master, placement.roles), (0, cores(&[1])));
    }

    #[test]
    fn a_master_on_a_core_it_may_not_use_takes_the_lowest_it_may() {
        let placement = Placement::split(cores(&[2, 5]), 0).expect("two cores");
        assert_eq!((placement.master, placement.roles), (2, cores(&[5])));
        let beyond = Placement::split(cores(&[1, 3]), CpuSet::MAX_CPU).expect("two cores");
        assert_eq!((beyond.master, beyond.roles), (1, cores(&[3])));
    }

    #[test]
    fn the_core_read_is_the_one_this_thread_runs_on() {
        let allowed = rustix::thread::sched_getaffinity(None).expect("this thread's cores");
        // Each allowed core in turn, from the highest: a thread pinned to one core
        // runs there once the call returns.
        let cores: Vec<usize> = (0..CpuSet::MAX_CPU)
            .rev()
            .filter(|&cpu| allowed.is_set(cpu))
            .collect();
        let mut read = Vec::new();
        for &cpu in &cores {
            let mut only = CpuSet::new();
            only.set(cpu);
            if rustix::thread::sched_setaffinity(None, &only).is_err() {
                break; // not allowed to pin here: nothing to compare
            }
            read.push((cpu, current_core()));
        }
        let _ = rustix::thread::sched_setaffinity(None, &allowed);
        for (cpu, core) in read {
            assert_eq!(core, Some(cpu), "pinned to core {cpu}");
        }
    }

    #[test]
    fn one_core_is_not_split() {
        assert_eq!(Placement::split(cores(&[3]), 3), None);
        assert_eq!(Placement::split(CpuSet::new(), 0), None);
    }
}
