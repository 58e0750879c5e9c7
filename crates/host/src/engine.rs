//! The wasmtime engine as Spin configures it — component model, epoch interruption
//! ticking every 10 ms, the pooling allocator sized for 1000 instances with Spin's limits
//! and Spin's `SPIN_MAX_INSTANCE_COUNT` / `SPIN_WASMTIME_*` overrides (falling back to
//! on-demand allocation where the address space cannot be reserved, or with
//! `SPIN_WASMTIME_POOLING=0`) — the componentizing of core modules (a `wasm32-wasip1`
//! build, which Spin turns into a component with the WASI preview 1 adapter), and the
//! on-disk cache of compiled components, so a second start does neither again.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use sha2::Digest;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch ticker advances the engine's epoch.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
const MB: usize = 1 << 20;
const GB: usize = 1 << 30;

/// How to configure the wasmtime engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Use the pooling instance allocator when the address space can be reserved.
    pub pooling: bool,
    /// Instances the pooling allocator has room for at once.
    pub max_instances: u32,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { pooling: true, max_instances: 1000 }
    }
}

/// Builds the engine and starts the epoch ticker thread (it stops with the process).
pub fn build(opts: &EngineOptions) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let forced = match std::env::var("SPIN_WASMTIME_POOLING").as_deref() {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        Ok(other) => anyhow::bail!("SPIN_WASMTIME_POOLING={other} is not supported: use 1 or 0"),
        Err(_) => None,
    };
    let pooling = opts.pooling && forced.unwrap_or_else(pooling_is_possible);
    if pooling {
        let pool = pooling_config(opts.max_instances, |k| std::env::var(k).ok())?;
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        tracing::debug!("pooling allocator enabled");
    } else if opts.pooling && forced.is_none() {
        tracing::warn!("the pooling allocator cannot reserve its address space here; using on-demand allocation");
    }
    let engine = Engine::new(&config).map_err(anyhow::Error::from).context("creating the wasmtime engine")?;
    let weak = engine.weak();
    std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        }
    })?;
    Ok(engine)
}

/// The pooling allocator's limits as Spin 3.6 sets them (crates/core), each overridable by
/// its `SPIN_WASMTIME_*` variable (read through `var`); a value that does not parse is an
/// error naming the variable.
fn pooling_config(default_instances: u32, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<PoolingAllocationConfig> {
    fn get<T: std::str::FromStr>(var: &impl Fn(&str) -> Option<String>, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match var(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|e| anyhow::anyhow!("{name}={v}: {e}; unset it or give a whole number")),
        }
    }
    let n: u32 = get(&var, "SPIN_MAX_INSTANCE_COUNT", default_instances)?;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(get(&var, "SPIN_WASMTIME_INSTANCE_COUNT", n)?)
        .total_memories(get(&var, "SPIN_WASMTIME_TOTAL_MEMORIES", n)?)
        .total_tables(get(&var, "SPIN_WASMTIME_TOTAL_TABLES", 2 * n)?)
        .total_stacks(get(&var, "SPIN_WASMTIME_TOTAL_STACKS", n)?)
        .total_core_instances(get(&var, "SPIN_WASMTIME_TOTAL_CORE_INSTANCES", 4 * n)?)
        .table_elements(get(&var, "SPIN_WASMTIME_INSTANCE_TABLE_ELEMENTS", 100_000)?)
        .max_component_instance_size(get(&var, "SPIN_WASMTIME_INSTANCE_SIZE", 10 * MB)?)
        .max_core_instance_size(get(&var, "SPIN_WASMTIME_CORE_INSTANCE_SIZE", 10 * MB)?)
        .max_core_instances_per_component(get(&var, "SPIN_WASMTIME_CORE_INSTANCE_COUNT", 200)?)
        .max_tables_per_component(get(&var, "SPIN_WASMTIME_INSTANCE_TABLES", 64)?)
        .max_memories_per_component(get(&var, "SPIN_WASMTIME_INSTANCE_MEMORIES", 32)?)
        .max_tables_per_module(get(&var, "SPIN_WASMTIME_MAX_TABLES_PER_MODULE", 2)?)
        .max_memories_per_module(get(&var, "SPIN_WASMTIME_MAX_MEMORIES_PER_MODULE", 2)?)
        // Memory use is capped per store by the limiter; the slot only bounds it.
        .max_memory_size(4 * GB)
        .linear_memory_keep_resident(get(&var, "SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT", 2 * MB)?)
        .table_keep_resident(get(&var, "SPIN_WASMTIME_TABLE_KEEP_RESIDENT", MB / 2)?)
        // Reset only the pages an instance dirtied (Linux 6.7+), not all it kept.
        .pagemap_scan(wasmtime::Enabled::Auto);
    Ok(pool)
}

/// Whether 1000 memory slots of address space can be reserved (not so under some
/// `ulimit -v` settings): probe with one large memory reservation, as Spin does.
fn pooling_is_possible() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        const BITS: u32 = 42;
        let mut config = Config::new();
        config.wasm_memory64(true);
        config.memory_reservation(1 << BITS);
        let Ok(engine) = Engine::new(&config) else {
            return false;
        };
        let mut store = wasmtime::Store::new(&engine, ());
        let ty = wasmtime::MemoryType::new64(0, Some(1 << (BITS - 16)));
        wasmtime::Memory::new(&mut store, ty).is_ok()
    })
}

/// The default cache folder: `$XDG_CACHE_HOME/spindapr` or `~/.cache/spindapr`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("SPINDAPR_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("spindapr")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("spindapr")))
}

/// Loads a component, from the compiled-code cache when the same bytes were compiled by
/// a compatible engine before; otherwise compiles it and stores the result.
pub fn load_component(engine: &Engine, wasm: &Path, cache_dir: Option<&Path>) -> anyhow::Result<Component> {
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read component {}", wasm.display()))?;
    let Some(cache_dir) = cache_dir else {
        return compile(engine, &bytes, wasm);
    };
    let mut compat = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    let key = format!("{}-{:016x}.cwasm", hex::encode(sha2::Sha256::digest(&bytes)), compat.finish());
    let cached = cache_dir.join(key);
    if cached.exists() {
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // compatibility hash (it is in the name), into our own cache folder.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(c) => {
                tracing::debug!(path = %cached.display(), "component loaded from the compiled-code cache");
                return Ok(c);
            }
            Err(e) => {
                tracing::warn!(path = %cached.display(), "ignoring unusable cache entry: {e:#}")
            }
        }
    }
    let component = compile(engine, &bytes, wasm)?;
    if let Err(e) = store(&component, cache_dir, &cached) {
        tracing::warn!("could not write the compiled-code cache in {}: {e:#}", cache_dir.display());
    }
    Ok(component)
}

fn compile(engine: &Engine, bytes: &[u8], wasm: &Path) -> anyhow::Result<Component> {
    let start = std::time::Instant::now();
    let bytes =
        componentize_if_module(bytes).with_context(|| format!("{} is a core module that cannot be made a component", wasm.display()))?;
    let c = Component::from_binary(engine, &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{} is not a valid WebAssembly component", wasm.display()))?;
    tracing::info!(path = %wasm.display(), elapsed_ms = start.elapsed().as_millis() as u64, "component compiled");
    Ok(c)
}

/// A core module (the binary's layer field is 0; a component's is 1) made a component as
/// Spin does for modules built by wit-bindgen 0.5 and later, such as spin-sdk's for
/// `wasm32-wasip1`: its preview 1 imports are adapted onto WASI 0.2 by the reactor adapter.
/// Anything else is handed back as it is.
pub fn componentize_if_module(bytes: &[u8]) -> anyhow::Result<std::borrow::Cow<'_, [u8]>> {
    const CORE_MODULE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    if !bytes.starts_with(&CORE_MODULE) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    use wasi_preview1_component_adapter_provider::{WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER};
    let start = std::time::Instant::now();
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(bytes)
        .context("reading the module's component-type sections (was it built with spin-sdk 2 or later?)")?
        .adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)
        .context("adding the WASI preview 1 adapter")?
        .encode()
        .context("encoding the component")?;
    tracing::info!(elapsed_ms = start.elapsed().as_millis() as u64, "core module componentized");
    Ok(std::borrow::Cow::Owned(component))
}

fn store(component: &Component, dir: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, component.serialize()?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_wasmtime_overrides_are_read_and_checked() {
        let none = |_: &str| None;
        assert!(pooling_config(1000, none).is_ok());
        let set = |k: &'static str, v: &'static str| move |name: &str| (name == k).then(|| v.to_string());
        assert!(pooling_config(1000, set("SPIN_WASMTIME_INSTANCE_TABLE_ELEMENTS", "200000")).is_ok());
        let e = pooling_config(1000, set("SPIN_MAX_INSTANCE_COUNT", "lots")).unwrap_err().to_string();
        assert!(e.contains("SPIN_MAX_INSTANCE_COUNT=lots"), "{e}");
        // The limits make a valid engine configuration.
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(4, none).unwrap()));
        if pooling_is_possible() {
            assert!(Engine::new(&config).is_ok());
        }
    }
}
