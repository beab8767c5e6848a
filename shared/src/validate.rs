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
    label_pairs(field, labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// [`labels`] over any map's entries (the state machine's and the config's
/// are ordered maps), so every map of labels is held to one rule; the first
/// bad key in sorted order is the one named.
pub fn label_pairs<'a>(
    field: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), FieldError> {
    let mut labels: Vec<(&str, &str)> = labels.into_iter().collect();
    at_most(field, "labels", labels.len(), MAX_LABELS)?;
    labels.sort_unstable();
    for (key, value) in labels {
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
        bounded_text(&key_field, value, MAX_LABEL_VALUE_LEN)?;
    }
    Ok(())
}

/// Refuses a list of `count` `things` longer than `max`.
fn at_most(field: &str, things: &str, count: usize, max: usize) -> Result<(), FieldError> {
    if count > max {
        return Err(FieldError::new(
            field,
            format!("at most {max} {things}, got {count}"),
        ));
    }
    Ok(())
}

/// A VM spec's fields as plain values, so the API's wire spec
/// ([`vm_spec`]) and the state machine's own spec are held to one rule
/// ([`spec_fields`]).
#[derive(Debug, Clone, Default)]
pub struct SpecFields<'a> {
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Guest image name.
    pub image: &'a str,
    /// Kernel path on the host.
    pub kernel: &'a str,
    /// Initrd path on the host.
    pub initrd: &'a str,
    /// Kernel command line.
    pub cmdline: &'a str,
    /// Prepared runner executable.
    pub runner: &'a str,
    /// Labels, in any order.
    pub labels: Vec<(&'a str, &'a str)>,
    /// Placement constraints.
    pub constraints: &'a [String],
    /// Anti-affinity group.
    pub group: &'a str,
    /// Most VMs of the group per node.
    pub max_per_node: u32,
    /// Scheduling priority.
    pub priority: i32,
    /// Placement strategy (`binpack`, `spread`; empty: the cluster's).
    pub strategy: &'a str,
    /// Topology key the group is spread across (`zone`, `rack`, a label).
    pub spread_by: &'a str,
}

/// Checks a VM spec's fields; `prefix` is the path of the spec in its
/// request (or command).
pub fn spec_fields(prefix: &str, spec: &SpecFields<'_>) -> Result<(), FieldError> {
    spec_resources(prefix, spec)?;
    spec_boot(prefix, spec)?;
    label_pairs(&format!("{prefix}.labels"), spec.labels.iter().copied())?;
    spec_placement(prefix, spec)?;
    let weight = spec.weight();
    if weight > MAX_VM_SPEC_BYTES {
        return Err(FieldError::new(
            prefix,
            format!(
                "the spec's text fields (paths, command line, labels, constraints, group) total {weight} bytes; at most {MAX_VM_SPEC_BYTES}"
            ),
        ));
    }
    Ok(())
}

impl SpecFields<'_> {
    /// What the spec costs the replicated state, bytes: its text fields
    /// plus a fixed share for the numbers. The unit of the per-spec and
    /// fleet-wide byte budgets (`MAX_VM_SPEC_BYTES`, `MAX_FLEET_SPEC_BYTES`).
    pub fn weight(&self) -> usize {
        const NUMBERS: usize = 64;
        let labels: usize = self.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        let constraints: usize = self.constraints.iter().map(String::len).sum();
        NUMBERS
            + self.image.len()
            + self.kernel.len()
            + self.initrd.len()
            + self.cmdline.len()
            + self.runner.len()
            + labels
            + constraints
            + self.group.len()
            + self.strategy.len()
            + self.spread_by.len()
    }
}

/// A quota's label, `key=value`, held to the label rules.
pub fn quota_label(field: &str, label: &str) -> Result<(), FieldError> {
    let Some((key, value)) = label.split_once('=') else {
        return Err(FieldError::new(
            field,
            format!("expected key=value (like team=web), got {label:?}"),
        ));
    };
    if value.is_empty() {
        return Err(FieldError::new(field, "the label's value is empty"));
    }
    label_pairs(field, [(key, value)])
}

/// vCPUs and memory within their ranges.
fn spec_resources(prefix: &str, spec: &SpecFields<'_>) -> Result<(), FieldError> {
    if !(MIN_VCPUS..=MAX_VCPUS).contains(&spec.vcpus) {
        return Err(FieldError::new(
            format!("{prefix}.vcpus"),
            format!(
                "must be between {MIN_VCPUS} and {MAX_VCPUS}, got {}",
                spec.vcpus
            ),
        ));
    }
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&spec.memory_mib) {
        return Err(FieldError::new(
            format!("{prefix}.memory_mib"),
            format!(
                "must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB} MiB, got {}",
                spec.memory_mib
            ),
        ));
    }
    Ok(())
}

/// At most one boot source (image, kernel or runner), each well formed.
fn spec_boot(prefix: &str, spec: &SpecFields<'_>) -> Result<(), FieldError> {
    let f = |name: &str| format!("{prefix}.{name}");
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
        dns_label(&f("image"), spec.image)?;
    }
    if has_kernel {
        absolute_path(&f("kernel"), spec.kernel)?;
    }
    if !spec.initrd.is_empty() {
        if !has_kernel {
            return Err(FieldError::new(f("initrd"), "needs kernel to be set"));
        }
        absolute_path(&f("initrd"), spec.initrd)?;
    }
    if !spec.cmdline.is_empty() {
        if has_runner {
            return Err(FieldError::new(f("cmdline"), "cannot be used with runner"));
        }
        bounded_text(&f("cmdline"), spec.cmdline, MAX_CMDLINE_LEN)?;
    }
    if has_runner {
        absolute_path(&f("runner"), spec.runner)?;
    }
    Ok(())
}

/// Constraints, group and priority.
fn spec_placement(prefix: &str, spec: &SpecFields<'_>) -> Result<(), FieldError> {
    let f = |name: &str| format!("{prefix}.{name}");
    at_most(
        &f("constraints"),
        "constraints",
        spec.constraints.len(),
        MAX_CONSTRAINTS,
    )?;
    for (i, c) in spec.constraints.iter().enumerate() {
        let field = format!("{prefix}.constraints[{i}]");
        bounded_text(&field, c, MAX_CONSTRAINT_LEN)?;
        crate::constraint::Constraint::parse(c).map_err(|e| FieldError::new(field, e.0))?;
    }
    if !spec.group.is_empty() {
        dns_label(&f("group"), spec.group)?;
    } else if spec.max_per_node != 0 {
        return Err(FieldError::new(f("max_per_node"), "needs group to be set"));
    } else if !spec.spread_by.is_empty() {
        return Err(FieldError::new(
            f("spread_by"),
            "spreads the VMs of a group: needs group to be set",
        ));
    }
    if !spec.spread_by.is_empty() {
        label_pairs(&f("spread_by"), [(spec.spread_by, "")])?;
    }
    if !matches!(spec.strategy, "" | "binpack" | "spread") {
        return Err(FieldError::new(
            f("strategy"),
            format!(
                "must be binpack, spread or empty (the cluster's default), got {:?}",
                spec.strategy
            ),
        ));
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
    Ok(())
}

/// Checks a wire VM spec; `prefix` is the path of the spec in its request.
pub fn vm_spec(prefix: &str, spec: &VmSpec) -> Result<(), FieldError> {
    spec_fields(
        prefix,
        &SpecFields {
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            image: &spec.image,
            kernel: &spec.kernel,
            initrd: &spec.initrd,
            cmdline: &spec.cmdline,
            runner: &spec.runner,
            labels: spec
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            constraints: &spec.constraints,
            group: &spec.group,
            max_per_node: spec.max_per_node,
            priority: spec.priority,
            strategy: &spec.strategy,
            spread_by: &spec.spread_by,
        },
    )?;
    if RestartPolicy::try_from(spec.restart_policy).is_err() {
        return Err(FieldError::new(
            format!("{prefix}.restart_policy"),
            format!("unknown value {}", spec.restart_policy),
        ));
    }
    Ok(())
}

/// A node id: 0 means "none" everywhere, so a node never has it.
pub fn node_id(field: &str, id: u64) -> Result<(), FieldError> {
    if id == 0 {
        return Err(FieldError::new(field, "must be a positive node id"));
    }
    Ok(())
}

/// A node's gRPC address, as it joins and as its record carries it:
/// `host:port`, at most [`MAX_ADDRESS_LEN`] bytes.
pub fn node_address(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() || value.len() > MAX_ADDRESS_LEN || !value.contains(':') {
        return Err(FieldError::new(
            field,
            format!("must be host:port, at most {MAX_ADDRESS_LEN} bytes"),
        ));
    }
    no_control_chars(field, value)
}

/// A node's zone or rack name (empty: none).
pub fn topology(field: &str, value: &str) -> Result<(), FieldError> {
    bounded_text(field, value, MAX_TOPOLOGY_LEN)
}

/// A node's VM backend: one of [`BACKENDS`].
pub fn backend(field: &str, value: &str) -> Result<(), FieldError> {
    if !BACKENDS.contains(&value) {
        return Err(FieldError::new(
            field,
            format!("must be one of {}", BACKENDS.join(", ")),
        ));
    }
    Ok(())
}

/// A fencing lease in ms, within [`FENCE_LEASE_RANGE_MS`].
pub fn lease_ms(field: &str, value: u64) -> Result<(), FieldError> {
    if !FENCE_LEASE_RANGE_MS.contains(&value) {
        return Err(FieldError::new(
            field,
            format!(
                "must be between {} and {}, got {value}",
                FENCE_LEASE_RANGE_MS.start(),
                FENCE_LEASE_RANGE_MS.end()
            ),
        ));
    }
    Ok(())
}

/// A drain's `parallel`: within `DRAIN_PARALLEL_RANGE`.
pub fn drain_parallel(field: &str, value: u32) -> Result<(), FieldError> {
    let range = crate::limits::DRAIN_PARALLEL_RANGE;
    if !range.contains(&value) {
        return Err(FieldError::new(
            field,
            format!(
                "must be between {} and {}, got {value}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(())
}

/// The reason a status report carries (apply keeps the first
/// [`MAX_REASON_LEN`] bytes of it).
pub fn report_reason(field: &str, value: &str) -> Result<(), FieldError> {
    if value.len() > MAX_REPORT_REASON_LEN {
        return Err(FieldError::new(
            field,
            format!(
                "must be at most {MAX_REPORT_REASON_LEN} bytes, got {}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// How many VM reports (one per VM at most) and gone names
/// ([`MAX_GONE_PER_REPORT`]) one status report carries.
pub fn report_counts(reports: usize, gone: usize) -> Result<(), FieldError> {
    at_most("reports", "reports", reports, MAX_VMS)?;
    at_most("gone", "names", gone, MAX_GONE_PER_REPORT)
}

/// A token's hash as the cluster stores it: SHA-256 in lowercase hex. Only
/// hashes reach the replicated state; the secret never does.
pub fn token_hash(field: &str, value: &str) -> Result<(), FieldError> {
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if value.len() != TOKEN_HASH_LEN || !value.bytes().all(hex) {
        return Err(FieldError::new(
            field,
            format!("must be {TOKEN_HASH_LEN} lowercase hex digits"),
        ));
    }
    Ok(())
}

/// A request id (see `request_id`): 1 to
/// [`crate::request_id::MAX_REQUEST_ID_LEN`] letters, digits and `._:-`.
pub fn request_id(field: &str, id: &str) -> Result<(), FieldError> {
    use crate::request_id::MAX_REQUEST_ID_LEN;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if id.is_empty() || id.len() > MAX_REQUEST_ID_LEN || !id.chars().all(allowed) {
        return Err(FieldError::new(
            field,
            format!(
                "1 to {MAX_REQUEST_ID_LEN} characters of letters, digits and ._:- (got {} bytes)",
                id.len()
            ),
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

    #[test]
    fn node_fields_follow_their_rules() {
        assert_eq!(node_id("id", 1), Ok(()));
        assert!(node_id("id", 0).is_err());
        assert_eq!(node_address("address", "10.0.0.1:7000"), Ok(()));
        for bad in [
            "",
            "host",
            "a:1\n",
            &format!("{}:1", "h".repeat(MAX_ADDRESS_LEN)),
        ] {
            assert!(node_address("address", bad).is_err(), "{bad:?}");
        }
        assert_eq!(topology("zone", ""), Ok(()));
        assert!(topology("zone", &"z".repeat(MAX_TOPOLOGY_LEN + 1)).is_err());
        assert!(topology("rack", "r\t1").is_err());
        for b in BACKENDS {
            assert_eq!(backend("backend", b), Ok(()));
        }
        assert!(backend("backend", "docker").is_err());
        assert_eq!(lease_ms("lease_ms", 6000), Ok(()));
        assert!(lease_ms("lease_ms", 999).is_err());
        assert!(lease_ms("lease_ms", 120_001).is_err());
        let pairs = [("zone key", "v")];
        assert_eq!(
            label_pairs("labels", pairs).map_err(|e| e.field),
            Err("labels[\"zone key\"]".to_string())
        );
    }

    #[test]
    fn reports_are_bounded() {
        assert_eq!(report_counts(3, MAX_GONE_PER_REPORT), Ok(()));
        let e = report_counts(0, MAX_GONE_PER_REPORT + 1).unwrap_err();
        assert_eq!(e.field, "gone");
        assert_eq!(
            report_reason("reason", &"x".repeat(MAX_REASON_LEN + 1)),
            Ok(())
        );
        assert!(report_reason("reason", &"x".repeat(MAX_REPORT_REASON_LEN + 1)).is_err());
    }

    #[test]
    fn token_hashes_are_lowercase_sha256_hex() {
        assert_eq!(token_hash("hash", &"ab12".repeat(16)), Ok(()));
        for bad in [
            "",
            "ab",
            &"AB12".repeat(16),
            &"g".repeat(64),
            &"a".repeat(65),
        ] {
            assert!(token_hash("hash", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_ids_follow_their_rule() {
        assert_eq!(request_id("id", "cli-1:7"), Ok(()));
        for bad in ["", "has space", "ünï", &"x".repeat(129)] {
            assert!(request_id("id", bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_names_never_panic(name in "\\PC{0,80}") {
            let _ = vm_name(&name);
        }
    }
}
