//! `bench authz`: the cost of one authorization decision, as every client
//! call pays it in its handler (the Cedar decision with the default
//! policies, a token with and without labels, a VM with labels), beside
//! the gate's token lookup (a SHA-256 and a map lookup). Compared in
//! `docs/benchmarks.md` with the write path's p50.

use blixard_daemon::security::authz::{Authorizer, Resource};
use blixard_daemon::security::Caller;
use blixard_shared::auth::Role;
use color_eyre::eyre::Result;
use std::collections::BTreeMap;
use std::time::Instant;

/// Times `f` `iterations` times; (p50, p99) in microseconds.
fn time(iterations: usize, mut f: impl FnMut() -> bool) -> (f64, f64) {
    let mut samples = Vec::with_capacity(iterations);
    let mut allowed = 0usize;
    for _ in 0..iterations {
        let t = Instant::now();
        allowed += usize::from(f());
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    std::hint::black_box(allowed);
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    (at(0.5), at(0.99))
}

/// Runs the benchmark and prints Markdown.
pub fn run(iterations: usize) -> Result<()> {
    let authz = Authorizer::default();
    let labels = BTreeMap::from([
        ("team".to_string(), "web".to_string()),
        ("tier".to_string(), "front".to_string()),
    ]);
    let vm = Resource::Vm {
        name: "web-1",
        labels: &labels,
    };
    let operator = Caller::Token {
        name: "ops".into(),
        role: Role::Operator,
        labels: BTreeMap::new(),
    };
    let scoped = Caller::Token {
        name: "web-team".into(),
        role: Role::Operator,
        labels: BTreeMap::from([("team".to_string(), "web".to_string())]),
    };
    // Warm the compiled policies (compiled once per policy revision).
    let _ = authz.allows(None, &operator, "vm.stop", vm);
    let names: Vec<String> = (0..iterations).map(|i| format!("vm-{i}")).collect();
    let mut next = 0usize;
    let fresh = time(iterations, || {
        next += 1;
        let vm = Resource::Vm {
            name: &names[next - 1],
            labels: &labels,
        };
        authz.allows(None, &operator, "vm.stop", vm)
    });
    let cases = [
        (
            "vm.stop on a VM not decided before (a Cedar decision)",
            fresh,
        ),
        (
            "vm.stop by an operator",
            time(iterations, || authz.allows(None, &operator, "vm.stop", vm)),
        ),
        (
            "vm.stop by a labelled token",
            time(iterations, || authz.allows(None, &scoped, "vm.stop", vm)),
        ),
        (
            "token.create by an operator (denied)",
            time(iterations, || {
                authz.allows(None, &operator, "token.create", Resource::Cluster)
            }),
        ),
        (
            "the gate's token hash",
            time(iterations, || {
                !blixard_daemon::security::secrets::hash_token(
                    "blxt_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                )
                .is_empty()
            }),
        ),
    ];
    println!("### Authorization cost per call ({iterations} decisions each)");
    println!();
    println!("| decision | p50 µs | p99 µs |");
    println!("|---|---|---|");
    for (what, (p50, p99)) in cases {
        println!("| {what} | {p50:.1} | {p99:.1} |");
    }
    Ok(())
}
