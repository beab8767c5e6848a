//! An in-memory backend for tests only: no processes, instant starts and
//! stops, and knobs to make instances crash or refuse to start.

use super::{BackendError, Instance, InstanceState, VmBackend};
use crate::state::VmRecord;
use std::collections::HashMap;
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
    instances: Mutex<HashMap<String, FakeInstance>>,
    next_pid: Mutex<u32>,
    starts: Mutex<Vec<String>>,
}

impl FakeBackend {
    /// Makes `name`'s instance end, cleanly or not.
    pub fn crash(&self, name: &str, clean: bool) {
        if let Some(i) = self.lock().get_mut(name) {
            i.state = InstanceState::Exited {
                clean,
                reason: if clean {
                    "exited with code 0".into()
                } else {
                    "killed by SIGKILL".into()
                },
            };
        }
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, FakeInstance>> {
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
        self.lock().insert(
            vm.name.clone(),
            FakeInstance {
                instance: instance.clone(),
                state: InstanceState::Running { pid },
            },
        );
        self.starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(vm.name.clone());
        Ok(instance)
    }

    async fn stop(&self, name: &str, _timeout: Duration) -> Result<(), BackendError> {
        if let Some(i) = self.lock().get_mut(name) {
            if matches!(i.state, InstanceState::Running { .. }) {
                i.state = InstanceState::Exited {
                    clean: true,
                    reason: "powered off".into(),
                };
            }
        }
        Ok(())
    }

    async fn kill(&self, name: &str) -> Result<(), BackendError> {
        if let Some(i) = self.lock().get_mut(name) {
            if matches!(i.state, InstanceState::Running { .. }) {
                i.state = InstanceState::Exited {
                    clean: false,
                    reason: "killed by SIGKILL".into(),
                };
            }
        }
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
        self.lock().remove(name);
        Ok(())
    }

    fn console_path(&self, name: &str) -> PathBuf {
        PathBuf::from("/nonexistent/fake").join(name)
    }
}
