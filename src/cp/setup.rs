//! A CP case set up at its world size before any tensor exists: the mask, the sharding, the layout,
//! the strategy's engine, its schedule and the per-rank attention kernel. The real ranks
//! (`harness::cp`) and the simulator's virtual ones (`sim`) both start from [`CpSetup::new`], so the
//! virtual ranks plan exactly what the real ones do.

use super::engine::Engine;
use super::registry::find_strategy;
use super::schedule::{CpLayout, Schedule};
use super::shard::Shard;
use crate::attn::MaskedAttention;
use crate::case::{Case, CpOptions};
use crate::mask::{build_pattern, Mask};

pub struct CpSetup {
    pub mask: Mask,
    pub shard: Shard,
    pub layout: CpLayout,
    pub engine: Box<dyn Engine>,
    pub schedule: Schedule,
    /// The kernel every rank runs its pieces on (the case's `backend`).
    pub attention: &'static dyn MaskedAttention,
    /// The strategy's options that run: the case's, with the strategy's defaults filled in (the
    /// row's `strategy_params`).
    pub options: CpOptions,
}

/// The shape of a CP case as schedules see it.
pub fn layout(case: &Case) -> CpLayout {
    CpLayout { batch: case.batch, heads_q: case.heads.q, heads_kv: case.heads.kv, head_dim: case.head_dim, elem_bytes: case.dtype.size(), pass: case.pass }
}

impl CpSetup {
    /// Resolves `case` at its `world_size`. Errors are bad input, as one line naming the flag
    /// (`--strategy`, `--mask`, `--backend`, `--ulysses-degree`, …).
    pub fn new(case: &Case) -> Result<CpSetup, String> {
        let def = find_strategy(&case.strategy).map_err(|e| e.to_string())?;
        let world = case.world_size;
        if world == 0 {
            return Err("--world-size must be at least 1".into());
        }
        let backend = crate::backend::find_backend(&case.backend).map_err(|e| format!("--backend: {e}"))?;
        let attention = backend.masked_attention().ok_or_else(|| {
            let able: Vec<&str> = crate::backend::registry().iter().filter(|b| b.masked_attention().is_some()).map(|b| b.name()).collect();
            format!("--backend {}: cannot compute CP pieces (an arbitrary sub-mask with its LSE); use one of {}", case.backend, able.join(", "))
        })?;
        let hm = build_pattern(&case.pattern, case.seqlen, &case.params).map_err(|e| format!("--mask {}: {e}", case.pattern))?;
        if !hm.is_shared() {
            return Err(format!("--mask {}: per-head masks are not supported by CP strategies yet", case.pattern));
        }
        let mask = hm.groups.into_iter().next().expect("one group");
        let unused = def.not_taken(&case.cp);
        if !unused.is_empty() {
            return Err(not_taken_message(def, &unused));
        }
        let layout = layout(case);
        let options = (def.resolve)(world, &layout, &case.cp);
        let engine = (def.engine)(world, &layout, &options).map_err(|e| e.to_string())?;
        let shard = Shard::new(case.cp.sharding.unwrap_or(def.default_sharding), case.seqlen, world).map_err(|e| e.to_string())?;
        let schedule = engine.schedule(def.name, &shard, &mask, &layout);
        Ok(CpSetup { mask, shard, layout, engine, schedule, attention, options })
    }
}

/// The options `case` runs with: its own with its strategy's defaults filled in (as given when the
/// strategy is unknown).
pub fn resolved_options(case: &Case) -> CpOptions {
    match find_strategy(&case.strategy) {
        Ok(def) if case.world_size > 0 => (def.resolve)(case.world_size, &layout(case), &case.cp),
        _ => case.cp,
    }
}

/// A row's `strategy_params` for `case`: the options it runs with, as `key=value;…`; empty for a
/// kernel case.
pub fn strategy_params(case: &Case) -> String {
    if case.strategy.is_empty() {
        return String::new();
    }
    resolved_options(case).to_params().to_string()
}

/// One line for options a strategy does not take, naming the flags: `--strategy ring-p2p takes no
/// --ulysses-degree (it takes: sharding)`.
pub fn not_taken_message(def: &crate::cp::strategy::StrategyDef, unused: &[&str]) -> String {
    let flags: Vec<String> = unused.iter().map(|k| format!("--{}", k.replace('_', "-"))).collect();
    format!("--strategy {} takes no {} (it takes: {})", def.name, flags.join(", "), def.takes_list())
}

#[cfg(test)]
mod tests {
    use super::fixtures::cp_case;
    use super::*;
    use crate::case::HeadLayout;
    use crate::flops::Pass;

    fn case(strategy: &str, world: usize, o: CpOptions) -> Case {
        Case { cp: o, ..cp_case(strategy, "causal", &[], 64, world, HeadLayout { q: 8, kv: 2 }, Pass::Fwd) }
    }

    #[test]
    fn options_a_strategy_does_not_take_are_refused() {
        let e = CpSetup::new(&case("ring-p2p", 4, CpOptions { ulysses_degree: Some(2), ..Default::default() })).err().unwrap();
        assert_eq!(e, "--strategy ring-p2p takes no --ulysses-degree (it takes: sharding)");
        let e = CpSetup::new(&case("ulysses", 4, CpOptions { inner_ring: Some(2), ..Default::default() })).err().unwrap();
        assert!(e.contains("takes no --inner-ring"), "{e}");
        let zig = CpOptions { sharding: Some(crate::case::Sharding::Zigzag), ..Default::default() };
        assert!(CpSetup::new(&case("ring-allgather", 4, zig)).is_ok(), "every strategy takes sharding");
    }

    /// `usp --inner-ring` is LoongTrain: the ring of W/U members split into inner rings; the options
    /// that run have the defaults filled in.
    #[test]
    fn usp_with_an_inner_ring_is_a_double_ring_and_options_resolve() {
        let s = CpSetup::new(&case("usp", 8, CpOptions { ulysses_degree: Some(2), inner_ring: Some(2), ..Default::default() })).unwrap();
        assert!(s.engine.note(&s.layout).starts_with("ulysses=2 ring=4 inner=2 outer=2"), "{}", s.engine.note(&s.layout));
        assert!(s.schedule.steps.iter().flat_map(|st| &st.messages).any(|m| m.what.contains("outer")), "an outer-ring prefetch");
        let plain = CpSetup::new(&case("usp", 8, CpOptions { ulysses_degree: Some(2), ..Default::default() })).unwrap();
        assert!(plain.engine.note(&plain.layout).starts_with("ulysses=2 ring=4 inner=4 outer=1"));
        assert_eq!(strategy_params(&case("usp", 4, CpOptions::default())), "ulysses_degree=2");
        assert_eq!(strategy_params(&case("double-ring", 16, CpOptions::default())), "inner_ring=4");
        assert_eq!(strategy_params(&case("ring-p2p", 4, CpOptions::default())), "");
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::case::{Case, DType, DeviceKind, HeadLayout};
    use crate::flops::Pass;
    use crate::mask::Params;

    /// A small CPU CP case for tests: batch 1, D = 16, fp32, per-rank kernel `sliced`, the strategy's
    /// default options.
    pub fn cp_case(strategy: &str, pattern: &str, params: &[(&str, &str)], seqlen: usize, world: usize, heads: HeadLayout, pass: Pass) -> Case {
        let params = params.iter().fold(Params::new(), |p, (k, v)| p.set(k, v));
        Case::cp(strategy, "sliced", world, Default::default(), Case::kernel("sliced", pattern, params, seqlen, heads, 16, DType::Fp32, pass, DeviceKind::Cpu))
    }
}
