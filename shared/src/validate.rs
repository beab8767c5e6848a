//! Request validation rules, shared by the daemon's API (which enforces
//! them) and the CLI (which checks early to give the same message without a
//! round trip). The state machine re-checks what depends on state.

use crate::limits::*;
use crate::proto::v1::{CreateVmRequest, RestartPolicy, VmSpec};
use std::collections::HashMap;

/// A request field that breaks a rule; `field` uses the request's own
/// snake_case path (e.g. `spec.memory_mib`) so the caller knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Path of the offending field.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl FieldError {
    /// Builds an error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<FieldError> for tonic::Status {
    fn from(e: FieldError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// Checks a DNS label (RFC 1123): 1 to 63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn dns_label(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(FieldError::new(
            field,
            format!(
                "must be at most {MAX_NAME_LEN} characters, got {}",
                value.len()
            ),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(FieldError::new(
            field,
            "may contain only lowercase letters a-z, digits 0-9 and '-'",
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(FieldError::new(
            field,
            "must start and end with a letter or digit",
        ));
    }
    Ok(())
}

/// A VM name: a DNS label.
pub fn vm_name(value: &str) -> Result<(), FieldError> {
    dns_label("name", value)
}

fn no_control_chars(field: &str, value: &str) -> Result<(), FieldError> {
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn bounded_text(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.len() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} bytes, got {}", value.len()),
        ));
    }
    no_control_chars(field, value)
}

fn absolute_path(field: &str, value: &str) -> Result<(), FieldError> {
    bounded_text(field, value, MAX_PATH_LEN)?;
    if !value.starts_with('/') {
        return Err(FieldError::new(field, "must be an absolute path"));
    }
    Ok(())
}

/// Labels: bounded count; keys are `[a-zA-Z0-9._/-]`, 1-63 chars; values
/// are printable, at most 253 bytes.
pub fn labels(field: &str, labels: &HashMap<String, String>) -> Result<(), FieldError> {
    if labels.len() > MAX_LABELS {
        return Err(FieldError::new(
            field,
            format!("at most {MAX_LABELS} labels, got {}", labels.len()),
        ));
    }
    let mut keys: Vec<&String> = labels.keys().collect();
    keys.sort();
    for key in keys {
        let key_field = format!("{field}[{key:?}]");
        if key.is_empty() || key.len() > MAX_LABEL_KEY_LEN {
            return Err(FieldError::new(
                key_field,
                format!("label key must be 1 to {MAX_LABEL_KEY_LEN} characters"),
            ));
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        {
            return Err(FieldError::new(
                key_field,
                "label key may contain only letters, digits, '.', '_', '-' and '/'",
            ));
        }
        bounded_text(&key_field, &labels[key], MAX_LABEL_VALUE_LEN)?;
    }
    Ok(())
}

/// Checks a VM spec; `prefix` is the path of the spec in its request.
pub fn vm_spec(prefix: &str, spec: &VmSpec) -> Result<(), FieldError> {
    let f = |name: &str| format!("{prefix}.{name}");
    if !(MIN_VCPUS..=MAX_VCPUS).contains(&spec.vcpus) {
        return Err(FieldError::new(
            f("vcpus"),
            format!(
                "must be between {MIN_VCPUS} and {MAX_VCPUS}, got {}",
                spec.vcpus
            ),
        ));
    }
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&spec.memory_mib) {
        return Err(FieldError::new(
            f("memory_mib"),
            format!(
                "must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB} MiB, got {}",
                spec.memory_mib
            ),
        ));
    }
    let has_image = !spec.image.is_empty();
    let has_kernel = !spec.kernel.is_empty();
    let has_runner = !spec.runner.is_empty();
    if usize::from(has_image) + usize::from(has_kernel) + usize::from(has_runner) > 1 {
        return Err(FieldError::new(
            f("image"),
            "give one of image, kernel (with initrd and cmdline) or runner, not several",
        ));
    }
    if has_image {
        dns_label(&f("image"), &spec.image)?;
    }
    if has_kernel {
        absolute_path(&f("kernel"), &spec.kernel)?;
    }
    if !spec.initrd.is_empty() {
        if !has_kernel {
            return Err(FieldError::new(f("initrd"), "needs kernel to be set"));
        }
        absolute_path(&f("initrd"), &spec.initrd)?;
    }
    if !spec.cmdline.is_empty() {
        if has_runner {
            return Err(FieldError::new(f("cmdline"), "cannot be used with runner"));
        }
        bounded_text(&f("cmdline"), &spec.cmdline, MAX_CMDLINE_LEN)?;
    }
    if has_runner {
        absolute_path(&f("runner"), &spec.runner)?;
    }
    labels(&f("labels"), &spec.labels)?;
    if spec.constraints.len() > MAX_CONSTRAINTS {
        return Err(FieldError::new(
            f("constraints"),
            format!(
                "at most {MAX_CONSTRAINTS} constraints, got {}",
                spec.constraints.len()
            ),
        ));
    }
    for (i, c) in spec.constraints.iter().enumerate() {
        let field = format!("{prefix}.constraints[{i}]");
        if c.trim().is_empty() {
            return Err(FieldError::new(field, "must not be empty"));
        }
        bounded_text(&field, c, MAX_CONSTRAINT_LEN)?;
    }
    if !spec.group.is_empty() {
        dns_label(&f("group"), &spec.group)?;
    } else if spec.max_per_node != 0 {
        return Err(FieldError::new(f("max_per_node"), "needs group to be set"));
    }
    if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&spec.priority) {
        return Err(FieldError::new(
            f("priority"),
            format!(
                "must be between {MIN_PRIORITY} and {MAX_PRIORITY}, got {}",
                spec.priority
            ),
        ));
    }
    if RestartPolicy::try_from(spec.restart_policy).is_err() {
        return Err(FieldError::new(
            f("restart_policy"),
            format!("unknown value {}", spec.restart_policy),
        ));
    }
    Ok(())
}

/// Checks a whole `CreateVm` request.
pub fn create_vm(req: &CreateVmRequest) -> Result<(), FieldError> {
    vm_name(&req.name)?;
    let spec = req
        .spec
        .as_ref()
        .ok_or_else(|| FieldError::new("spec", "is required"))?;
    vm_spec("spec", spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> CreateVmRequest {
        CreateVmRequest {
            name: "web-1".into(),
            spec: Some(VmSpec {
                vcpus: 1,
                memory_mib: 128,
                ..Default::default()
            }),
            stopped: false,
        }
    }

    fn field_of(req: &CreateVmRequest) -> String {
        match create_vm(req) {
            Err(e) => e.field,
            Ok(()) => "<accepted>".into(),
        }
    }

    #[test]
    fn accepts_a_plain_request() {
        assert_eq!(create_vm(&good()), Ok(()));
    }

    #[test]
    fn names_follow_dns_label_rules() {
        for bad in ["", "-a", "a-", "Web", "a_b", "ünï", "a.b", &"a".repeat(64)] {
            let mut r = good();
            r.name = bad.to_string();
            assert_eq!(field_of(&r), "name", "{bad:?} should be rejected");
        }
        let mut r = good();
        r.name = "a".repeat(63);
        assert_eq!(create_vm(&r), Ok(()));
    }

    #[test]
    fn every_spec_field_is_checked() {
        type Mutator = fn(&mut VmSpec);
        let cases: Vec<(&str, Mutator)> = vec![
            ("spec.vcpus", |s| s.vcpus = 0),
            ("spec.vcpus", |s| s.vcpus = 100_000),
            ("spec.memory_mib", |s| s.memory_mib = 0),
            ("spec.memory_mib", |s| s.memory_mib = u64::MAX),
            ("spec.image", |s| s.image = "Bad Image".into()),
            ("spec.image", |s| {
                s.image = "default".into();
                s.kernel = "/k".into()
            }),
            ("spec.kernel", |s| s.kernel = "relative/vmlinux".into()),
            ("spec.initrd", |s| s.initrd = "/initrd".into()),
            ("spec.cmdline", |s| s.cmdline = "x".repeat(5000)),
            ("spec.cmdline", |s| s.cmdline = "console=ttyS0\n".into()),
            ("spec.runner", |s| s.runner = "microvm-run".into()),
            ("spec.labels[\"\"]", |s| {
                s.labels.insert(String::new(), "v".into());
            }),
            ("spec.labels", |s| {
                for i in 0..65 {
                    s.labels.insert(format!("k{i}"), "v".into());
                }
            }),
            ("spec.constraints[0]", |s| s.constraints.push(" ".into())),
            ("spec.group", |s| s.group = "UPPER".into()),
            ("spec.max_per_node", |s| s.max_per_node = 2),
            ("spec.priority", |s| s.priority = 5000),
            ("spec.restart_policy", |s| s.restart_policy = 99),
        ];
        for (field, mutate) in cases {
            let mut r = good();
            if let Some(spec) = r.spec.as_mut() {
                mutate(spec);
            }
            assert_eq!(field_of(&r), field);
        }
        let mut r = good();
        r.spec = None;
        assert_eq!(field_of(&r), "spec");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_names_never_panic(name in "\\PC{0,80}") {
            let _ = vm_name(&name);
        }
    }
}
