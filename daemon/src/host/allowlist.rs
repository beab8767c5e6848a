//! Which host paths a VM may name. What a VM runs on a host (its `runner`,
//! or the `kernel` and `initrd` QEMU reads) is the host operator's decision,
//! not the API caller's: a path is allowed only when, with every symlink
//! followed, it lies inside one of the directories the operator listed in
//! `allowed_runner_dirs` (kernels and initrds: or inside the image dir).
//!
//! Every refusal is the same error whatever the reason (the path does not
//! exist, cannot be resolved, or lies outside), so the answer never tells a
//! caller whether a host path outside the allowed directories exists.
//!
//! The API node checks a new spec against its own config (configs are
//! expected to agree across hosts); the agent checks again on the host that
//! is about to start the VM, just before it does.

use crate::config::Config;
use crate::state::VmSpec;
use std::fmt;
use std::path::{Path, PathBuf};

/// The spec fields that name a host path, so a refusal can say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathField {
    /// `spec.runner`: an executable run as the VM.
    Runner,
    /// `spec.kernel`: the kernel QEMU boots.
    Kernel,
    /// `spec.initrd`: the initrd QEMU loads.
    Initrd,
}

impl PathField {
    /// The field's name in the spec (`runner`, `kernel`, `initrd`).
    pub fn name(self) -> &'static str {
        match self {
            PathField::Runner => "runner",
            PathField::Kernel => "kernel",
            PathField::Initrd => "initrd",
        }
    }

    /// Where a path of this field must be, in the words of the config.
    fn allowed_places(self) -> &'static str {
        match self {
            PathField::Runner => "allowed_runner_dirs",
            PathField::Kernel | PathField::Initrd => "allowed_runner_dirs or image dir",
        }
    }

    /// What the caller can do about a refusal: only the host operator can
    /// allow a directory.
    pub fn remedy(self) -> &'static str {
        match self {
            PathField::Runner => {
                "ask the host operator to add its directory to allowed_runner_dirs"
            }
            PathField::Kernel | PathField::Initrd => {
                "ask the host operator to add its directory to allowed_runner_dirs, or put it in the image dir"
            }
        }
    }
}

impl fmt::Display for PathField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A path a VM may not use on this host. One error for every reason, so it
/// reveals nothing about host paths outside the allowed directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: not an existing path inside this host's {}", .field.allowed_places())]
pub struct NotAllowed {
    /// The field that named the path.
    pub field: PathField,
}

/// A set of directories paths must lie inside.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    dirs: Vec<PathBuf>,
}

impl Allowlist {
    /// An allowlist of `dirs`. They are resolved at each check, not here,
    /// so a directory created or re-pointed after start counts as it is.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self { dirs }
    }

    /// The resolved path (symlinks followed) when `path` is absolute,
    /// exists and lies strictly inside one of the directories, compared
    /// component by component (`/opt/run-evil` is not inside `/opt/run`).
    /// A relative path is refused: it would resolve differently in the VM's
    /// own working directory.
    pub fn resolve(&self, path: &Path) -> Option<PathBuf> {
        if !path.is_absolute() {
            return None;
        }
        let resolved = std::fs::canonicalize(path).ok()?;
        self.dirs
            .iter()
            .filter_map(|dir| std::fs::canonicalize(dir).ok())
            .any(|dir| resolved != dir && resolved.starts_with(&dir))
            .then_some(resolved)
    }

    /// Checks the path `field` names; the error names the field only.
    pub fn check(&self, field: PathField, path: &str) -> Result<PathBuf, NotAllowed> {
        self.resolve(Path::new(path)).ok_or(NotAllowed { field })
    }
}

/// What one host lets VMs name: runners from `allowed_runner_dirs`, kernels
/// and initrds from those or the image dir. Images are named, not pathed,
/// and always come from the image dir.
#[derive(Debug, Clone, Default)]
pub struct HostPaths {
    runners: Allowlist,
    boot: Allowlist,
}

impl HostPaths {
    /// The policy of `allowed_runner_dirs` plus `image_dir`.
    pub fn new(allowed_runner_dirs: &[PathBuf], image_dir: &Path) -> Self {
        let mut boot = allowed_runner_dirs.to_vec();
        boot.push(image_dir.to_path_buf());
        Self {
            runners: Allowlist::new(allowed_runner_dirs.to_vec()),
            boot: Allowlist::new(boot),
        }
    }

    /// The policy a node's config sets.
    pub fn from_config(config: &Config) -> Self {
        Self::new(&config.allowed_runner_dirs, &config.image_dir)
    }

    /// Checks every path `spec` names (empty fields name none); the first
    /// refusal is returned.
    pub fn check(&self, spec: &VmSpec) -> Result<(), NotAllowed> {
        let fields = [
            (PathField::Runner, &spec.runner, &self.runners),
            (PathField::Kernel, &spec.kernel, &self.boot),
            (PathField::Initrd, &spec.initrd, &self.boot),
        ];
        for (field, path, list) in fields {
            if !path.is_empty() {
                list.check(field, path)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A temp tree: `run/` (allowed) with `run/ok.sh`, and `run-evil/x.sh`
    /// and `outside/secret` beside it (not allowed).
    struct Tree {
        tmp: tempfile::TempDir,
        list: Allowlist,
    }

    impl Tree {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            for dir in ["run", "run-evil", "outside", "images"] {
                std::fs::create_dir(tmp.path().join(dir)).unwrap();
            }
            for file in [
                "run/ok.sh",
                "run-evil/x.sh",
                "outside/secret",
                "images/vmlinux",
            ] {
                std::fs::write(tmp.path().join(file), "x").unwrap();
            }
            let list = Allowlist::new(vec![tmp.path().join("run")]);
            Self { tmp, list }
        }

        fn path(&self, rel: &str) -> String {
            self.tmp.path().join(rel).display().to_string()
        }

        fn check(&self, rel: &str) -> Result<PathBuf, NotAllowed> {
            self.list.check(PathField::Runner, &self.path(rel))
        }
    }

    const REFUSED: Result<PathBuf, NotAllowed> = Err(NotAllowed {
        field: PathField::Runner,
    });

    #[test]
    fn a_file_inside_is_allowed_and_resolved() {
        let t = Tree::new();
        let resolved = t.check("run/ok.sh").unwrap();
        assert_eq!(
            resolved,
            std::fs::canonicalize(t.path("run/ok.sh")).unwrap()
        );
    }

    #[test]
    fn outside_and_string_prefix_siblings_are_refused() {
        let t = Tree::new();
        assert_eq!(t.check("outside/secret"), REFUSED);
        assert_eq!(t.check("run-evil/x.sh"), REFUSED);
        assert_eq!(
            t.list.check(PathField::Runner, "/usr/bin/env"),
            REFUSED,
            "a system binary"
        );
        assert_eq!(t.check("run"), REFUSED, "the allowed dir itself");
    }

    #[test]
    fn dot_dot_cannot_climb_out() {
        let t = Tree::new();
        assert_eq!(t.check("run/../outside/secret"), REFUSED);
        assert_eq!(t.check("run/../run-evil/x.sh"), REFUSED);
        assert_eq!(t.check("run/../../../../../../usr/bin/env"), REFUSED);
        assert!(t.check("outside/../run/ok.sh").is_ok(), "resolves inside");
    }

    #[test]
    fn symlinks_are_judged_by_their_target() {
        let t = Tree::new();
        symlink(t.path("outside/secret"), t.path("run/escape")).unwrap();
        symlink("/usr/bin/env", t.path("run/env")).unwrap();
        symlink(t.path("outside"), t.path("run/subdir")).unwrap();
        assert_eq!(t.check("run/escape"), REFUSED);
        assert_eq!(t.check("run/env"), REFUSED);
        assert_eq!(t.check("run/subdir/secret"), REFUSED);
        symlink(t.path("run/ok.sh"), t.path("outside/link-in")).unwrap();
        assert!(t.check("outside/link-in").is_ok(), "target inside");
    }

    #[test]
    fn an_allowed_dir_given_through_a_symlink_still_counts() {
        let t = Tree::new();
        symlink(t.path("run"), t.path("run-link")).unwrap();
        let list = Allowlist::new(vec![t.tmp.path().join("run-link")]);
        assert!(list.check(PathField::Runner, &t.path("run/ok.sh")).is_ok());
    }

    #[test]
    fn missing_paths_get_the_same_error_as_existing_ones_outside() {
        let t = Tree::new();
        let existing_outside = t.check("outside/secret");
        assert_eq!(t.check("outside/nope"), existing_outside);
        assert_eq!(t.check("nowhere/at/all"), existing_outside);
        assert_eq!(t.check("run/nope"), existing_outside);
        assert_eq!(
            t.list.check(PathField::Runner, "/etc/hostname"),
            t.list.check(PathField::Runner, "/etc/no-such-file-here"),
        );
        let message = |r: Result<PathBuf, NotAllowed>| r.unwrap_err().to_string();
        assert_eq!(
            message(t.check("outside/secret")),
            message(t.check("outside/nope"))
        );
    }

    #[test]
    fn relative_paths_and_missing_allowed_dirs_allow_nothing() {
        let t = Tree::new();
        assert_eq!(t.list.check(PathField::Runner, "run/ok.sh"), REFUSED);
        let none = Allowlist::new(vec![t.tmp.path().join("no-such-dir")]);
        assert!(none.check(PathField::Runner, &t.path("run/ok.sh")).is_err());
        assert!(Allowlist::default()
            .check(PathField::Runner, &t.path("run/ok.sh"))
            .is_err());
    }

    #[test]
    fn the_image_dir_allows_kernels_and_initrds_but_not_runners() {
        let t = Tree::new();
        let paths = HostPaths::new(&[t.tmp.path().join("run")], &t.tmp.path().join("images"));
        let spec = |f: fn(&mut VmSpec, String), rel: &str| {
            let mut s = VmSpec::default();
            f(&mut s, t.path(rel));
            s
        };
        let kernel = spec(|s, p| s.kernel = p, "images/vmlinux");
        assert_eq!(paths.check(&kernel), Ok(()));
        let initrd = spec(|s, p| s.initrd = p, "images/vmlinux");
        assert_eq!(paths.check(&initrd), Ok(()));
        let runner = spec(|s, p| s.runner = p, "images/vmlinux");
        assert_eq!(
            paths.check(&runner),
            Err(NotAllowed {
                field: PathField::Runner
            })
        );
        let kernel = spec(|s, p| s.kernel = p, "run/ok.sh");
        assert_eq!(paths.check(&kernel), Ok(()));
        let mut both = spec(|s, p| s.kernel = p, "images/vmlinux");
        both.initrd = t.path("outside/secret");
        let err = paths.check(&both).unwrap_err();
        assert_eq!(err.field, PathField::Initrd);
        assert!(err.to_string().starts_with("spec.initrd: "), "{err}");
        assert!(err.to_string().contains("image dir"), "{err}");
        assert_eq!(paths.check(&VmSpec::default()), Ok(()), "an image spec");
    }
}
