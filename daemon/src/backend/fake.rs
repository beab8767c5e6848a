//! An in-memory backend for tests only: no processes, instant starts and
//! stops, and knobs to make instances crash or refuse to start.

use super::{BackendError, Instance, InstanceState, VmBackend};
use crate::sim::host::{RunChange, RunJournal, RunRecord};
use crate::state::VmRecord;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone)]
struct FakeInstance {
    instance: Instance,
    state: InstanceState,
}

/// The test backend. Not selectable from the command line.
#[derive(Default)]
pub struct FakeBackend {
    instances: Mutex<BTreeMap<String, FakeInstance>>,
    next_pid: Mutex<u32>,
    starts: Mutex<Vec<String>>,
    /// Where a simulated host records its starts and ends.
    journal: Option<(u64, RunJournal)>,
    /// The simulated host lost power: nothing starts until it is back.
    dead: Mutex<bool>,
}

impl FakeBackend {
    /// A backend for simulated host `node` that records every start and
    /// end of an instance in `journal`.
    pub fn journaled(node: u64, journal: RunJournal) -> Self {
        Self {
            journal: Some((node, journal)),
            ..Self::default()
        }
    }

    fn record(&self, vm: &str, epoch: u64, change: RunChange) {
        if let Some((node, journal)) = &self.journal {
            journal.push(RunRecord {
                node: *node,
                vm: vm.to_string(),
                epoch,
                change,
                at: tokio::time::Instant::now(),
            });
        }
    }

    /// Records that the host's fencing lease now runs until `until`.
    pub fn note_lease(&self, until: tokio::time::Instant) {
        self.record("", 0, RunChange::LeaseUntil(until));
    }

    /// Ends `name`'s instance if it runs, recording the end.
    fn end(&self, name: &str, clean: bool, reason: &str) {
        let ended = self.lock().get_mut(name).and_then(|i| {
            matches!(i.state, InstanceState::Running { .. }).then(|| {
                i.state = InstanceState::Exited {
                    clean,
                    reason: reason.into(),
                };
                i.instance.epoch
            })
        });
        if let Some(epoch) = ended {
            self.record(name, epoch, RunChange::Ended);
        }
    }

    /// Ends every running instance at once, as a host's power loss does
    /// (the instances are not there when the node restarts).
    pub fn power_off(&self) {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        for name in &names {
            self.end(name, false, "host lost power");
        }
        self.lock().clear();
        *self.dead.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    /// Kills every running instance, as the fence watchdog does when the
    /// host's lease has run out.
    pub fn fence(&self) {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        for name in &names {
            self.end(name, false, "killed by the fence watchdog");
        }
    }

    /// The host has power again (its node is about to start).
    pub fn power_on(&self) {
        *self.dead.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }

    /// Makes `name`'s instance end, cleanly or not.
    pub fn crash(&self, name: &str, clean: bool) {
        let reason = if clean {
            "exited with code 0"
        } else {
            "killed by SIGKILL"
        };
        self.end(name, clean, reason);
    }

    /// Names in the order they were started (restarts included).
    pub fn starts(&self) -> Vec<String> {
        self.starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Pretends an instance survived a daemon restart.
    pub fn preload(&self, name: &str, epoch: u64, pid: u32) {
        self.lock().insert(
            name.to_string(),
            FakeInstance {
                instance: Instance {
                    name: name.to_string(),
                    epoch,
                    pid,
                    started_at_ms: 1,
                },
                state: InstanceState::Running { pid },
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, FakeInstance>> {
        self.instances.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl VmBackend for FakeBackend {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn check(&self, vm: &VmRecord) -> Result<(), BackendError> {
        if vm.spec.image == "missing" {
            return Err(BackendError::InvalidSpec(
                "spec.image: unknown image \"missing\"".into(),
            ));
        }
        Ok(())
    }

    async fn start(&self, vm: &VmRecord) -> Result<Instance, BackendError> {
        self.check(vm)?;
        if *self.dead.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err(BackendError::Failed("the host has no power".into()));
        }
        let pid = {
            let mut next = self.next_pid.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            1000 + *next
        };
        let instance = Instance {
            name: vm.name.clone(),
            epoch: vm.epoch,
            pid,
            started_at_ms: 1,
        };
        // A start over a running instance replaces it: it ends first.
        self.end(&vm.name, false, "replaced by a new start");
        self.lock().insert(
            vm.name.clone(),
            FakeInstance {
                instance: instance.clone(),
                state: InstanceState::Running { pid },
            },
        );
        self.record(&vm.name, vm.epoch, RunChange::Started);
        self.starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(vm.name.clone());
        Ok(instance)
    }

    async fn stop(&self, name: &str, _timeout: Duration) -> Result<(), BackendError> {
        self.end(name, true, "powered off");
        Ok(())
    }

    async fn kill(&self, name: &str) -> Result<(), BackendError> {
        self.end(name, false, "killed by SIGKILL");
        Ok(())
    }

    async fn state(&self, name: &str) -> InstanceState {
        self.lock()
            .get(name)
            .map_or(InstanceState::Missing, |i| i.state.clone())
    }

    async fn adopt(&self) -> Vec<Instance> {
        self.lock()
            .values()
            .filter(|i| matches!(i.state, InstanceState::Running { .. }))
            .map(|i| i.instance.clone())
            .collect()
    }

    async fn cleanup(&self, name: &str) -> Result<(), BackendError> {
        self.end(name, false, "cleaned up");
        self.lock().remove(name);
        Ok(())
    }

    fn console_path(&self, name: &str) -> PathBuf {
        PathBuf::from("/nonexistent/fake").join(name)
    }
}
