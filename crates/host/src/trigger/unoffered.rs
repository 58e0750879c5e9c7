//! Spin interfaces this host does not implement (outbound Redis, MQTT, PostgreSQL, MySQL,
//! LLM, other `wasi:keyvalue` and `wasi:config` drafts, Spin 1's): an app importing one still starts, as
//! it would on a Spin that has none of those resources configured. Start-up warns naming
//! the interface; each call returns the interface's own error value (the case Spin uses
//! for a resource it cannot reach: `connection-failed`, else `other`, `runtime-error`,
//! `io`, else the first case carrying a message) saying the host does not offer it. A
//! function with no error result cannot be reached without a resource those calls make,
//! and traps.

use std::collections::HashSet;

use wasmtime::Engine;
use wasmtime::component::types::{ComponentItem, Type};
use wasmtime::component::{Component, Linker, ResourceType, Val};

use super::state::HostState;

/// Namespaces of the interfaces Spin gives apps (everything else unknown still fails
/// the start, naming it).
const SPIN_NAMESPACES: &[&str] = &["fermyon:spin", "spin:", "wasi:keyvalue/", "wasi:config/"];

/// The Spin interfaces the host implements (trigger/state.rs).
const OFFERED: &[&str] = &[
    "fermyon:spin/variables@2.0.0",
    "fermyon:spin/key-value@2.0.0",
    "fermyon:spin/sqlite@2.0.0",
    "spin:sqlite/sqlite@3.0.0",
    "wasi:config/store@0.2.0-draft-2024-09-27",
    "wasi:keyvalue/store@0.2.0-draft2",
    "wasi:keyvalue/batch@0.2.0-draft2",
    "wasi:keyvalue/atomics@0.2.0-draft2",
];

/// The imported resource type every stubbed resource stands for (none is ever made).
struct Unoffered;

/// Whether an import named `name` is served by an interface `offered` under the linker's
/// semver matching (same name; same major version, or same minor for 0.x; a pre-release
/// such as `0.2.0-draft` only by itself).
fn served_by(name: &str, offered: &str) -> bool {
    let prerelease = |s: &str| s.split_once('@').is_some_and(|(_, v)| v.contains('-'));
    if prerelease(name) || prerelease(offered) {
        return name == offered;
    }
    let split = |s: &str| -> (String, Option<(u64, u64)>) {
        match s.split_once('@') {
            Some((n, v)) => {
                let mut parts = v.split(['.', '-']).map(|p| p.parse::<u64>().ok());
                let major = parts.next().flatten();
                let minor = parts.next().flatten();
                (n.to_string(), major.zip(minor))
            }
            None => (s.to_string(), None),
        }
    };
    let ((n1, v1), (n2, v2)) = (split(name), split(offered));
    n1 == n2
        && match (v1, v2) {
            (Some((0, a)), Some((0, b))) => a == b,
            (Some((a, _)), Some((b, _))) => a == b,
            (None, None) => true,
            _ => false,
        }
}

/// The Spin interfaces `component` imports that the host does not offer.
pub fn unoffered_imports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .filter(|(name, item)| {
            matches!(item.ty, ComponentItem::ComponentInstance(_)) && SPIN_NAMESPACES.iter().any(|ns| name.starts_with(ns))
        })
        .filter(|(name, _)| !OFFERED.iter().any(|o| served_by(name, o)))
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Links stubs for `component`'s unoffered Spin imports not yet in `linker` (`linked`
/// remembers each interface's functions and resources already stubbed: another
/// component may import other functions of the same interface), and returns their names
/// for the start-up warning.
pub fn link_unoffered(
    linker: &mut Linker<HostState>,
    engine: &Engine,
    component: &Component,
    linked: &mut HashSet<(String, String)>,
) -> anyhow::Result<Vec<String>> {
    let names = unoffered_imports(engine, component);
    for (name, item) in component.component_type().imports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else { continue };
        if !names.iter().any(|n| n == name) {
            continue;
        }
        let missing: Vec<_> =
            instance.exports(engine).filter(|(export, _)| !linked.contains(&(name.to_string(), export.to_string()))).collect();
        if missing.is_empty() {
            continue;
        }
        let mut li = linker.instance(name)?;
        for (export, item) in missing {
            match item.ty {
                ComponentItem::ComponentFunc(_) => {
                    let (iface, func) = (name.to_string(), export.to_string());
                    li.func_new(export, move |_, ty, _, results| {
                        let message = format!("{iface} is not offered by this host (spindapr); run the app on Spin to use it");
                        let mut types = ty.results();
                        match (types.next().and_then(|t| error_result(&t, &message)), results.first_mut()) {
                            (Some(v), Some(slot)) => {
                                *slot = v;
                                Ok(())
                            }
                            _ => Err(wasmtime::Error::msg(format!("{iface}#{func}: {message}"))),
                        }
                    })?;
                }
                ComponentItem::Resource(_) => li.resource(export, ResourceType::host::<Unoffered>(), |_, _| Ok(()))?,
                _ => {}
            }
            linked.insert((name.to_string(), export.to_string()));
        }
    }
    Ok(names)
}

/// `Err(e)` of a `result<_, E>` type, with `E`'s case for an unreachable resource.
fn error_result(ty: &Type, message: &str) -> Option<Val> {
    let Type::Result(r) = ty else { return None };
    let err = match r.err() {
        None => None,
        Some(e) => Some(Box::new(error_value(&e, message)?)),
    };
    Some(Val::Result(Err(err)))
}

fn error_value(ty: &Type, message: &str) -> Option<Val> {
    match ty {
        Type::String => Some(Val::String(message.to_string())),
        Type::Enum(e) => e.names().next().map(|n| Val::Enum(n.to_string())),
        Type::Variant(v) => {
            let cases: Vec<_> = v.cases().collect();
            let with_message = |name: &str| cases.iter().find(|c| c.name == name && matches!(c.ty, Some(Type::String)));
            let chosen = ["connection-failed", "other", "runtime-error", "io"]
                .iter()
                .find_map(|n| with_message(n))
                .or_else(|| cases.iter().find(|c| matches!(c.ty, Some(Type::String))))
                .or_else(|| cases.iter().find(|c| c.ty.is_none()))?;
            let payload = match &chosen.ty {
                Some(Type::String) => Some(Box::new(Val::String(message.to_string()))),
                _ => None,
            };
            Some(Val::Variant(chosen.name.to_string(), payload))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_matching_is_the_linkers() {
        assert!(served_by("fermyon:spin/key-value@2.0.0", "fermyon:spin/key-value@2.0.0"));
        assert!(served_by("spin:sqlite/sqlite@3.1.0", "spin:sqlite/sqlite@3.0.0"));
        assert!(!served_by("fermyon:spin/key-value", "fermyon:spin/key-value@2.0.0"));
        assert!(!served_by("fermyon:spin/mqtt@2.0.0", "fermyon:spin/sqlite@2.0.0"));
        assert!(!served_by("wasi:keyvalue/store@0.2.0-draft2", "wasi:keyvalue/store@0.3.0"));
        assert!(!served_by("wasi:config/store@0.2.0-draft", "wasi:config/store@0.2.0-draft-2024-09-27"));
        assert!(served_by("wasi:config/store@0.2.0-draft-2024-09-27", "wasi:config/store@0.2.0-draft-2024-09-27"));
    }
}
