//! The compiled-component cache: a second load reads the compiled code instead of compiling; a
//! corrupt, truncated or foreign cache file is compiled again and replaced, never used; a
//! restarted worker says where its plugins came from.

use std::path::{Path, PathBuf};

use serde_json::json;
use spool::{CacheStatus, CompileCache, Sandbox, SandboxConfig};

use crate::support::{Setup, job, limits, plugin_path, stop};

fn sandbox(dir: &Path, fuel: bool) -> Sandbox {
    Sandbox::new(SandboxConfig {
        concurrency: 2,
        max_memory: 64 << 20,
        fuel,
        ..SandboxConfig::default()
    })
    .unwrap()
    .with_cache(Some(CompileCache::new(dir.to_owned())))
}

fn load(sandbox: &Sandbox) -> spool::Plugin {
    sandbox
        .load_plugin_with(
            &plugin_path("email"),
            limits(),
            crate::support::grants("email"),
        )
        .unwrap()
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

async fn runs_ok(sandbox: &Sandbox, plugin: &spool::Plugin) {
    let report = sandbox
        .run(plugin, &job(json!({"to": "ada@example.com", "mode": "ok"})))
        .await
        .unwrap();
    assert!(report.outcome.is_success(), "{report:?}");
}

#[tokio::test]
async fn a_second_load_reads_the_compiled_plugin_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let first = sandbox(dir.path(), false);
    let plugin = load(&first);
    assert_eq!(plugin.cache_status(), CacheStatus::Stored);
    let files = cache_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with(plugin.digest().as_str()) && name.ends_with(".cwasm"),
        "{name}"
    );

    // A new engine with the same configuration, as a restarted worker has.
    let second = sandbox(dir.path(), false);
    let cached = load(&second);
    assert_eq!(cached.cache_status(), CacheStatus::Hit);
    assert_eq!(cached.digest(), plugin.digest());
    runs_ok(&second, &cached).await;

    // Another engine configuration (fuel metering changes the code) has a file of its own.
    let fueled = sandbox(dir.path(), true);
    assert_eq!(load(&fueled).cache_status(), CacheStatus::Stored);
    assert_eq!(cache_files(dir.path()).len(), 2);
    assert_eq!(load(&fueled).cache_status(), CacheStatus::Hit);

    // A well-formed file compiled for the other configuration, under this one's name: wasmtime
    // refuses it, and it is compiled again rather than run.
    let fueled_file = cache_files(dir.path())
        .into_iter()
        .find(|f| *f != files[0])
        .unwrap();
    std::fs::copy(&fueled_file, &files[0]).unwrap();
    let replaced = load(&sandbox(dir.path(), false));
    assert_eq!(replaced.cache_status(), CacheStatus::Replaced);
    assert_eq!(load(&second).cache_status(), CacheStatus::Hit);

    // Without a cache, nothing is read or written.
    let uncached = Sandbox::new(SandboxConfig {
        concurrency: 1,
        ..SandboxConfig::default()
    })
    .unwrap();
    assert_eq!(load(&uncached).cache_status(), CacheStatus::Off);
    assert_eq!(cache_files(dir.path()).len(), 2);
}

#[tokio::test]
async fn a_corrupt_or_truncated_cache_file_is_compiled_again_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    load(&sandbox(dir.path(), false));
    let file = cache_files(dir.path()).remove(0);
    let good = std::fs::read(&file).unwrap();

    // One flipped byte in the machine code.
    let mut corrupt = good.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    // A file cut short, a file of zeros, garbage: all refused, none used.
    let bad_files = [
        corrupt,
        good[..good.len() / 3].to_vec(),
        vec![0; good.len()],
        b"not a cache file".to_vec(),
    ];
    for bad in bad_files {
        std::fs::write(&file, &bad).unwrap();
        let sandbox = sandbox(dir.path(), false);
        let plugin = load(&sandbox);
        assert_eq!(plugin.cache_status(), CacheStatus::Replaced);
        runs_ok(&sandbox, &plugin).await;
        assert_eq!(
            std::fs::read(&file).unwrap(),
            good,
            "the file is rewritten whole"
        );
        assert_eq!(load(&sandbox).cache_status(), CacheStatus::Hit);
    }
    // No temporary files are left behind.
    assert_eq!(cache_files(dir.path()), [file]);
}

#[test]
fn a_restarted_worker_loads_its_plugins_from_the_cache_unless_told_not_to() {
    let s = Setup::new(
        "[queues.email]\nplugin = \"EMAIL\"\n[queues.email.grants]\nhttp = [\"http://127.0.0.1:*\"]\n",
    );
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().to_str().unwrap();
    let summary = |extra: &[&str]| {
        let mut args = vec!["worker"];
        args.extend_from_slice(extra);
        let mut worker = s
            .cmd()
            .args(&args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The summary is printed once the plugins are loaded; read until its queue line.
        let mut stderr = std::io::BufReader::new(worker.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
            assert!(n > 0, "the worker exited before its summary");
            if line.contains("queue email") {
                break;
            }
        }
        stop(worker, "-TERM");
        line
    };
    let first = summary(&["--cache-dir", dir]);
    assert!(first.contains("compile cache stored"), "{first}");
    let second = summary(&["--cache-dir", dir]);
    assert!(second.contains("compile cache hit"), "{second}");
    let off = summary(&["--cache-dir", dir, "--no-cache"]);
    assert!(off.contains("compile cache off"), "{off}");
}
