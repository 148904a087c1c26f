//! The wasmtime engine Spool runs every plugin on, and the epoch ticker that drives timeouts.

use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::state::RunState;
use super::{SandboxConfig, SandboxError};
use crate::bindings;

/// Core instances one component may create: Rust components need a handful, interpreters
/// built from many linked libraries (Python, JavaScript) a few dozen.
const CORE_INSTANCES_PER_COMPONENT: u32 = 64;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 16;
/// How much of a memory slot is zeroed in place rather than returned to the kernel when an
/// instance is torn down: small guests then reuse warm pages with no `madvise` per run.
const KEEP_RESIDENT: usize = 4 << 20;

pub(super) fn build(config: &SandboxConfig) -> Result<Engine, SandboxError> {
    if config.concurrency == 0 {
        return Err(SandboxError::Config(
            "concurrency must be at least 1".to_owned(),
        ));
    }
    if config.epoch_tick.is_zero() {
        return Err(SandboxError::Config(
            "the epoch tick must be longer than zero".to_owned(),
        ));
    }
    let slots = config.concurrency;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(slots * MEMORIES_PER_COMPONENT)
        .total_tables(slots * TABLES_PER_COMPONENT)
        .total_stacks(slots)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(config.max_memory)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(Enabled::Auto);

    let mut wasm = Config::new();
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(config.epoch_interruption)
        .consume_fuel(config.fuel)
        .max_wasm_stack(config.max_wasm_stack)
        .async_stack_size(config.max_wasm_stack + (1 << 20))
        // WASIp3's concurrent calls are not used, and they double the cost of a call.
        .concurrency_support(false)
        .parallel_compilation(true);
    Engine::new(&wasm).map_err(|e| SandboxError::Engine(format!("{e:#}")))
}

/// Link what Spool grants: its own host interface (every version it serves), WASI 0.2 with nothing behind the
/// parts that would reach the outside world (the `WasiCtx` of each attempt decides that), `wasi:http` behind the
/// queue's `http` grant, and `wasi:config` (each attempt's values, empty unless the operator configured some).
/// Without `capabilities` (benchmarks only, see [`SandboxConfig::capabilities`]), neither of the last two.
pub(super) fn link(linker: &mut Linker<RunState>, capabilities: bool) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    if capabilities {
        // Linked for every plugin, used only by those whose queue grants `http` (a plugin that
        // imports it without the grant is refused at load; see `plugin::grant_for`).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    }
    bindings::v1::Plugin::add_to_linker::<_, HasSelf<_>>(linker, |state| state)?;
    bindings::v2::Plugin::add_to_linker::<_, HasSelf<_>>(linker, |state| state)?;
    if capabilities {
        super::wasi_config::link(linker)?;
    }
    Ok(())
}

/// Advance the engine's epoch every `tick` until the engine is dropped.
///
/// Ticks are scheduled from a fixed start, not from the last wake-up, and a late wake-up
/// advances the epoch once per tick missed, so the epoch counts elapsed ticks and deadlines
/// do not drift.
pub(super) fn start_ticker(engine: &Engine, tick: Duration) -> Result<(), SandboxError> {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("spool-epoch".to_owned())
        .spawn(move || {
            let start = Instant::now();
            let mut ticks: u64 = 0;
            loop {
                let due = ticks + 1;
                let at = start + tick_times(tick, due);
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let Some(engine) = weak.upgrade() else { return };
                let elapsed = start.elapsed().as_nanos() / tick.as_nanos().max(1);
                let now = u64::try_from(elapsed).unwrap_or(u64::MAX);
                while ticks < now {
                    engine.increment_epoch();
                    ticks += 1;
                }
            }
        });
    spawned
        .map(drop)
        .map_err(|e| SandboxError::Engine(format!("cannot start the epoch ticker: {e}")))
}

/// `tick * n`, saturating.
pub(super) fn tick_times(tick: Duration, n: u64) -> Duration {
    let nanos = tick.as_nanos().saturating_mul(u128::from(n));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}
