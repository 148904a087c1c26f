//! Files that are not Spool plugins are refused at load, with an error naming what is wrong,
//! by the library and by `spool plugin check`.

use std::path::PathBuf;

use spool::{Limits, LoadError};

use crate::support::{plugin_path, sandbox, spool};

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid WAT")
}

/// Writes `bytes` to a temporary file for the CLI.
fn file(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// Runs `spool plugin check` on `bytes`: it must exit 2 and say `expected` on stderr.
fn check_refuses(bytes: &[u8], expected: &str) {
    let (_dir, path) = file(bytes);
    let out = spool()
        .args(["plugin", "check"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in: {stderr}"
    );
}

fn load(bytes: &[u8]) -> Result<spool::Plugin, LoadError> {
    sandbox().load_plugin_bytes(bytes, Limits::default())
}

#[test]
fn a_file_that_is_not_webassembly_is_refused() {
    let bytes = b"#!/bin/sh\necho not wasm\n";
    assert!(matches!(load(bytes), Err(LoadError::NotWasm)));
    check_refuses(bytes, "not a WebAssembly file");
}

#[test]
fn a_core_module_is_refused_as_not_a_component() {
    let bytes = wat("(module (func (export \"handle\")))");
    assert!(matches!(load(&bytes), Err(LoadError::CoreModule)));
    check_refuses(&bytes, "not a component");
}

#[test]
fn a_truncated_component_is_refused_as_malformed() {
    let mut bytes = wat("(component (core module (func (export \"f\"))))");
    bytes.truncate(bytes.len() - 3);
    assert!(matches!(load(&bytes), Err(LoadError::Malformed { .. })));
    check_refuses(&bytes, "malformed component");
}

#[test]
fn a_component_without_the_handler_export_is_refused() {
    let bytes = wat("(component)");
    let err = load(&bytes).unwrap_err();
    assert!(matches!(err, LoadError::MissingExport { .. }), "{err}");
    check_refuses(&bytes, "missing export `spool:job/handler@0.2.0`");
}

#[test]
fn a_component_built_against_another_spool_version_is_refused() {
    let bytes = wat(r#"(component (import "spool:job/host@0.3.0" (instance)))"#);
    let err = load(&bytes).unwrap_err();
    assert!(matches!(err, LoadError::WrongVersion { .. }), "{err}");
    check_refuses(&bytes, "wrong package version");
    check_refuses(&bytes, "spool:job@0.3.0");
}

#[test]
fn a_component_importing_what_spool_does_not_grant_is_refused() {
    let bytes = wat(r#"(component (import "wasi:keyvalue/store@0.2.0-draft" (instance)))"#);
    let err = load(&bytes).unwrap_err();
    assert!(matches!(err, LoadError::UngrantedImport { .. }), "{err}");
    check_refuses(
        &bytes,
        "import `wasi:keyvalue/store@0.2.0-draft` is not granted",
    );
    // wasi:http is granted per queue: without the grant, the refusal names it.
    let bytes = wat(r#"(component (import "wasi:http/outgoing-handler@0.2.0" (instance)))"#);
    let err = load(&bytes).unwrap_err();
    assert!(matches!(err, LoadError::MissingGrant { .. }), "{err}");
}

#[test]
fn a_missing_file_is_refused_naming_the_path() {
    let out = spool()
        .args(["plugin", "check", "/nonexistent/plugin.wasm"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("/nonexistent/plugin.wasm"), "{stderr}");
}

#[test]
fn plugin_check_prints_the_digest_world_and_imports_of_a_good_plugin() {
    let path = plugin_path("email");
    let out = spool()
        .args(["plugin", "check", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = spool::Digest::of(&std::fs::read(&path).unwrap());
    assert_eq!(info["digest"], digest.as_str());
    assert_eq!(info["world"], "spool:job/plugin@0.2.0");
    let imports = info["imports"].as_array().unwrap();
    let grant_of = |name: &str| {
        imports
            .iter()
            .find(|i| i["name"].as_str().unwrap().starts_with(name))
            .map(|i| i["grant"].as_str().unwrap().to_owned())
    };
    assert_eq!(grant_of("spool:job/host@0.2.0").as_deref(), Some("spool"));
    assert_eq!(
        grant_of("wasi:cli/environment@").as_deref(),
        Some("locked-down")
    );
    assert_eq!(
        grant_of("wasi:clocks/monotonic-clock@").as_deref(),
        Some("wasi")
    );

    let text = spool()
        .args(["plugin", "check"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("sha256:{}", digest.as_str())),
        "{text}"
    );
    assert!(text.contains("spool:job/host@0.2.0"), "{text}");
}

/// A component whose `handler` export has the right name and the wrong types is refused at
/// load, naming the mismatch, rather than trapping at its first attempt.
#[test]
fn a_handler_with_the_wrong_signature_is_refused_at_load() {
    let bytes = wat(r#"
        (component
            (core module $m
                (func (export "handle") (param i32) (result i32) i32.const 0))
            (core instance $i (instantiate $m))
            (func $handle (param "x" u32) (result u32) (canon lift (core func $i "handle")))
            (instance $handler (export "handle" (func $handle)))
            (export "spool:job/handler@0.2.0" (instance $handler)))
    "#);
    let err = load(&bytes).expect_err("a mismatched handler loads");
    assert!(matches!(err, LoadError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("handle"), "{err}");
    check_refuses(&bytes, "does not match");
}

/// An empty component nested `depth` deep: each level's one section is the next component.
fn nested(depth: usize) -> Vec<u8> {
    const HEADER: [u8; 8] = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];
    let mut inner = HEADER.to_vec();
    for _ in 1..depth {
        let mut outer = HEADER.to_vec();
        outer.push(4); // a component section
        let mut len = inner.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                outer.push(byte);
                break;
            }
            outer.push(byte | 0x80);
        }
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    inner
}

/// Components nested deeper than a plugin may be are refused before wasmtime translates them
/// (10,000 levels in 118 KB once took 11 s and 3.5 GB), at once, naming the limit; a shallow
/// nesting gets as far as the missing handler.
#[test]
fn deeply_nested_components_are_refused_before_they_are_compiled() {
    for depth in [2, spool::MAX_NESTING] {
        let err = load(&nested(depth)).expect_err("an empty component loads");
        assert!(
            matches!(err, LoadError::MissingExport { .. }),
            "depth {depth}: {err}"
        );
    }
    for depth in [spool::MAX_NESTING + 1, 1_000, 10_000, 100_000] {
        let bytes = nested(depth);
        let started = std::time::Instant::now();
        let err = load(&bytes).expect_err("a deep nesting loads");
        assert!(
            matches!(err, LoadError::TooComplex { .. }),
            "depth {depth}: {err}"
        );
        assert!(err.to_string().contains("16 levels"), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "depth {depth} took {:?} to refuse",
            started.elapsed()
        );
    }
    check_refuses(&nested(10_000), "nested");
}
