//! rtcplane's build system, run as `cargo xtask <task>` (see `.cargo/config.toml`). Logic lives here, not in
//! shell scripts or a Makefile.
//!
//! - `ci`: what `.ci/run` runs: services up, `cargo fmt --check`, clippy with `-D warnings`, the shipped config
//!   checked by the binary, then every test of the workspace against the real PostgreSQL, MariaDB and Redis,
//!   then the container image built and run (`image`).
//! - `services`: check (and, where this machine has the commands, start) PostgreSQL, MariaDB and Redis.
//! - `helm-lint`: the Helm chart rendered for each `ci/*-values.yaml` and validated offline (also part of `ci`).
//! - `image`: `deploy/Dockerfile` built with podman and the image run (serve, probes, STUN, uid 65532; also
//!   part of `ci`).
//! - `bench turn|events|hooks|sip|rooms`, `fuzz turn|hooks|sip`.

// The build system spawns processes, waits with std time and talks to the terminal.
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    clippy::print_stderr
)]

mod bench;
mod bench_events;
mod bench_hooks;
mod bench_rooms;
mod bench_sip;
mod helm;
mod image;
mod services;
#[cfg(test)]
mod tidy;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("ci") => ci(&root),
        Some("services") => services::ensure(),
        Some("test") => test(&root),
        Some("helm-lint") => helm::lint(&root),
        Some("image") => image::check(&root),
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("turn") => bench::turn(
                &root,
                args.get(2)
                    .map_or(Ok(5), |s| s.parse())
                    .context("rounds must be a number")?,
            ),
            Some("events") => bench_events::events(
                &root,
                args.get(2)
                    .map_or(Ok(3), |s| s.parse())
                    .context("rounds must be a number")?,
            ),
            Some("hooks") => bench_hooks::hooks(
                &root,
                args.get(2)
                    .map_or(Ok(3), |s| s.parse())
                    .context("rounds must be a number")?,
            ),
            Some("sip") => bench_sip::sip(
                &root,
                args.get(2)
                    .map_or(Ok(3), |s| s.parse())
                    .context("rounds must be a number")?,
            ),
            Some("rooms") => bench_rooms::rooms(
                &root,
                args.get(2)
                    .map_or(Ok(3), |s| s.parse())
                    .context("rounds must be a number")?,
            ),
            _ => bail!("usage: cargo xtask bench turn|events|hooks|sip|rooms [rounds]"),
        },
        // The ceiling server of `bench hooks`, run as a child process.
        Some("__ceiling") => bench_hooks::ceiling_server(
            args.get(1)
                .context("port")?
                .parse()
                .context("port must be a number")?,
        ),
        Some("fuzz") => fuzz(
            &root,
            args.get(1).map(String::as_str),
            args.get(2).map(String::as_str),
        ),
        _ => {
            bail!(
                "usage: cargo xtask <task>\n\n  ci         fmt, clippy, config check and all tests on the real services (what .ci/run runs)\n  test       all tests (services must be up)\n  services   check/start PostgreSQL, MariaDB and Redis\n  helm-lint  render the Helm chart for every ci/*-values.yaml and validate it offline\n  image      build deploy/Dockerfile with podman and run the image (serve, probes, STUN, non-root)\n  fuzz T [S] run fuzz target T (turn, hooks, sip) for S seconds (default 60), with cargo-fuzz on nightly\n  bench turn [R]  rtcplane vs coturn turnserver, R alternating rounds (default 5)\n  bench events [R]  events end to end into a local webhook receiver, SQLite and PostgreSQL\n  bench hooks [R]   SRS on_publish decisions: static rule, token, stream key vs a bare axum handler\n  bench sip [R]     20,000 SIP accounts at the Kamailio fixture: rtcplane's agent vs SIPp at the same rate\n  bench rooms [R]   Loop room cycles (join, status, leave) in 100 rooms, SQLite and PostgreSQL"
            )
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn ci(root: &Path) -> anyhow::Result<()> {
    services::ensure()?;
    step(
        root,
        "cargo fmt --check",
        "cargo",
        &["fmt", "--all", "--", "--check"],
    )?;
    step(
        root,
        "cargo clippy",
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    step(
        root,
        "build rtcplane",
        "cargo",
        &["build", "--locked", "-p", "rtcplane"],
    )?;
    let bin = root.join("target/debug/rtcplane");
    step(
        root,
        "rtcplane check-config config/default.toml",
        bin.to_str().context("non-UTF-8 path")?,
        &["check-config", "--config", "config/default.toml"],
    )?;
    helm::lint(root)?;
    test(root)?;
    image::check(root)
}

/// Fuzz targets by subsystem name.
const FUZZ_TARGETS: &[(&str, &str)] = &[
    ("turn", "stun_decode"),
    ("hooks", "hooks_parse"),
    ("sip", "sip_parse"),
];

/// `cargo xtask fuzz <target> [seconds]`: installs cargo-fuzz if missing, then runs the target with the
/// committed seeds (`fuzz/seeds/<target>`) plus its growing local corpus (`fuzz/corpus/<target>`, ignored).
fn fuzz(root: &Path, target: Option<&str>, seconds: Option<&str>) -> anyhow::Result<()> {
    let names: Vec<&str> = FUZZ_TARGETS.iter().map(|(n, _)| *n).collect();
    let Some(&(_, bin)) = FUZZ_TARGETS.iter().find(|(n, _)| Some(*n) == target) else {
        bail!("usage: cargo xtask fuzz <{}> [seconds]", names.join("|"));
    };
    let seconds: u64 = seconds
        .map(str::parse)
        .transpose()
        .context("seconds must be a number")?
        .unwrap_or(60);
    let has_cargo_fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_fuzz {
        step(
            root,
            "install cargo-fuzz",
            "cargo",
            &["install", "cargo-fuzz", "--locked"],
        )?;
    }
    let corpus = root.join("fuzz/corpus").join(bin);
    std::fs::create_dir_all(&corpus)?;
    let seeds = root.join("fuzz/seeds").join(bin);
    let max_time = format!("-max_total_time={seconds}");
    step(
        &root.join("fuzz"),
        &format!("fuzz {bin} for {seconds}s"),
        "cargo",
        &[
            "+nightly",
            "fuzz",
            "run",
            bin,
            corpus.to_str().context("non-UTF-8 path")?,
            seeds.to_str().context("non-UTF-8 path")?,
            "--",
            &max_time,
        ],
    )
}

/// Runs every test, echoing cargo's output, and ends with one total line (`tests: N passed, M failed`) so the
/// run's result does not read as the last test binary's (often a doctest run with nothing in it).
fn test(root: &Path) -> anyhow::Result<()> {
    eprintln!("==> cargo test");
    let started = std::time::Instant::now();
    let mut child = Command::new("cargo")
        .args(["test", "--workspace", "--locked", "--no-fail-fast"])
        .current_dir(root)
        .env("CI", std::env::var("CI").unwrap_or_else(|_| "true".into()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let (mut passed, mut failed, mut ignored) = (0_u64, 0_u64, 0_u64);
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        writeln!(out, "{line}")?;
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, "passed");
            failed += count(rest, "failed");
            ignored += count(rest, "ignored");
        }
    }
    let status = child.wait()?;
    eprintln!(
        "<== cargo test: {status} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    writeln!(
        out,
        "tests: {passed} passed, {failed} failed, {ignored} skipped"
    )?;
    if !status.success() || failed > 0 {
        bail!("cargo test failed ({status})");
    }
    if passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok(())
}

/// `"ok. 10 passed; 0 failed; …"` → the number before `word`.
fn count(summary: &str, word: &str) -> u64 {
    summary
        .split([';', '.'])
        .filter_map(|part| part.trim().strip_suffix(word))
        .find_map(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `GET path` on 127.0.0.1:`port`, the whole response (status line, headers, body); reads give up after 10 s.
pub(crate) fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

/// A command's standard output; a failure names `what` and carries everything it printed.
pub(crate) fn output(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn step(root: &Path, name: &str, program: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("==> {name}");
    let started = std::time::Instant::now();
    let status = Command::new(program)
        .args(args)
        .current_dir(root)
        .env("CI", std::env::var("CI").unwrap_or_else(|_| "true".into()))
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    eprintln!(
        "<== {name}: {status} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}
