//! `console-bench`: how the console copes with a large fleet. Builds a
//! model with 10,000 VMs and 200 nodes, then measures the time to apply one
//! watch event (a VM record changing), the time to render one frame of each
//! heavy view, and the memory the model takes. Prints Markdown for
//! `docs/benchmarks.md`.

use blixard_shared::proto::v1 as pb;
use blixard_tui::console::model::Model;
use blixard_tui::console::msg::Msg;
use blixard_tui::console::update::update;
use blixard_tui::console::view::view;
use clap::Parser;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// VMs in the model.
    #[arg(long, default_value_t = 10_000)]
    vms: usize,
    /// Nodes in the model.
    #[arg(long, default_value_t = 200)]
    nodes: u64,
    /// Iterations per measurement.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("VmRSS:")
                        .map(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                })
                .flatten()
        })
        .unwrap_or(0)
}

fn vm(i: usize, nodes: u64, state: pb::VmState) -> pb::Vm {
    pb::Vm {
        name: format!("vm-{i:05}"),
        spec: Some(pb::VmSpec {
            vcpus: 1,
            memory_mib: 128 + (i as u64 % 8) * 64,
            image: "default".into(),
            ..Default::default()
        }),
        desired_state: pb::DesiredState::Running as i32,
        node_id: 1 + i as u64 % nodes,
        epoch: 1,
        state: state as i32,
        reason: String::new(),
        created_at_ms: 1,
        updated_at_ms: 1,
        revision: i as u64,
        observed: Some(pb::VmObserved {
            pid: 1000 + i as u32,
            started_at_ms: 1_000_000,
            restarts: (i % 3) as u32,
        }),
        ..Default::default()
    }
}

fn median_us(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

fn main() -> color_eyre::Result<()> {
    let args = Args::parse();
    let rss_before = rss_kib();
    let mut model = Model::new("127.0.0.1:7001", false);
    model.color = true;
    update(&mut model, Msg::Tick { now_ms: 2_000_000 });
    let nodes: Vec<pb::Node> = (1..=args.nodes)
        .map(|id| pb::Node {
            id,
            address: format!("10.0.{}.{}:7001", id / 250, id % 250),
            capacity: Some(pb::Capacity {
                vcpus: 64,
                memory_mib: 262_144,
                disk_mib: 0,
            }),
            zone: format!("z{}", id % 3),
            backend: "qemu".into(),
            health: pb::NodeHealth::Alive as i32,
            schedulability: pb::Schedulability::Schedulable as i32,
            ..Default::default()
        })
        .collect();
    let vms: Vec<pb::Vm> = (0..args.vms)
        .map(|i| vm(i, args.nodes, pb::VmState::Running))
        .collect();
    update(
        &mut model,
        Msg::Loaded {
            nodes,
            vms,
            revision: args.vms as u64,
        },
    );
    let rss_loaded = rss_kib();

    // Apply one event: a VM changes state (what the watch stream delivers).
    let mut apply = Vec::new();
    for i in 0..args.iterations {
        let changed = vm(
            (i * 37) % args.vms,
            args.nodes,
            if i % 2 == 0 {
                pb::VmState::Stopped
            } else {
                pb::VmState::Running
            },
        );
        let t = Instant::now();
        update(&mut model, Msg::VmChanged(changed));
        apply.push(t.elapsed().as_secs_f64() * 1e6);
    }

    let mut terminal = Terminal::new(TestBackend::new(200, 50))?;
    let mut results = Vec::new();
    for (name, key) in [("vms", '2'), ("nodes", '1'), ("overview", '0')] {
        update(
            &mut model,
            Msg::Key(KeyEvent::new(KeyCode::Char(key), KeyModifiers::NONE)),
        );
        let mut frames = Vec::new();
        for i in 0..args.iterations {
            // Move the selection so every frame has work to do.
            let k = if i % 2 == 0 { 'j' } else { 'k' };
            update(
                &mut model,
                Msg::Key(KeyEvent::new(KeyCode::Char(k), KeyModifiers::NONE)),
            );
            let t = Instant::now();
            terminal.draw(|f| view(f, &model))?;
            frames.push(t.elapsed().as_secs_f64() * 1e6);
        }
        results.push((name, median_us(frames)));
    }
    let (apply_med, apply_p99) = median_us(apply);
    println!("### Console with {} VMs and {} nodes", args.vms, args.nodes);
    println!();
    println!("| measure | median | p99 |");
    println!("|---|---|---|");
    println!(
        "| apply one VM event (update) | {:.0} µs | {:.0} µs |",
        apply_med, apply_p99
    );
    for (name, (med, p99)) in results {
        println!(
            "| render one 200x50 frame, {name} view | {:.0} µs | {:.0} µs |",
            med, p99
        );
    }
    println!(
        "| model memory (RSS growth after load) | {} MiB | |",
        rss_loaded.saturating_sub(rss_before) / 1024
    );
    Ok(())
}
