//! The tensor service and GPU scheduler (`nexus-tensor`) inside the AI
//! service: the model manager as the ledger sees it, and the ledger in
//! `/metrics`. The ring calls are in `crate::abi`, the HTTP routes in
//! `crate::api::tensor`.

mod residency;

pub use residency::ManagerModels;

use std::fmt::Write;

use nexus_tensor::TensorService;

/// The ledger and streams in Prometheus text.
pub fn render_metrics(svc: &TensorService, out: &mut String) {
    let st = svc.status();
    let l = &st.ledger;
    let _ = writeln!(out, "# HELP nexus_gpu_budget_bytes What the policy gives each pool (VRAM regions, host memory for tensors).\n# TYPE nexus_gpu_budget_bytes gauge");
    for p in &l.pools {
        let _ = writeln!(
            out,
            "nexus_gpu_budget_bytes{{pool=\"{}\"}} {}",
            p.pool.name(),
            p.budget
        );
    }
    let _ = writeln!(out, "# HELP nexus_gpu_used_bytes Charged to each pool, all tenants.\n# TYPE nexus_gpu_used_bytes gauge");
    for p in &l.pools {
        let _ = writeln!(
            out,
            "nexus_gpu_used_bytes{{pool=\"{}\"}} {}",
            p.pool.name(),
            p.used
        );
    }
    let _ = writeln!(out, "# HELP nexus_gpu_tenant_bytes Charged to each pool by each tenant.\n# TYPE nexus_gpu_tenant_bytes gauge");
    for p in &l.pools {
        for (t, b) in &p.by_tenant {
            let _ = writeln!(
                out,
                "nexus_gpu_tenant_bytes{{pool=\"{}\",tenant=\"{}\"}} {b}",
                p.pool.name(),
                t.label()
            );
        }
    }
    let gaming = u8::from(l.gaming);
    let _ = writeln!(out, "# HELP nexus_gpu_gaming_priority 1 while the gaming partition has priority on its region.\n# TYPE nexus_gpu_gaming_priority gauge\nnexus_gpu_gaming_priority {gaming}");
    let _ = writeln!(out, "# HELP nexus_gpu_evictions_total Idle models unloaded to make room in VRAM.\n# TYPE nexus_gpu_evictions_total counter\nnexus_gpu_evictions_total {}", l.evictions);
    let _ = writeln!(out, "# HELP nexus_gpu_refusals_total Requests refused for want of room (or gaming priority).\n# TYPE nexus_gpu_refusals_total counter\nnexus_gpu_refusals_total {}", l.refusals);
    let _ = writeln!(out, "# HELP nexus_gpu_pending_work Stream work queued or running.\n# TYPE nexus_gpu_pending_work gauge\nnexus_gpu_pending_work {}", st.pending_work);
}
