//! The CLI as operators meet it: `--version`, `check-config`, `migrate`, and start-up failures with their
//! exit codes.

// Tests spawn real processes and poll real servers with std time.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};

use support::{BIN, run};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn repo_file(rel: &str) -> String {
    format!("{}/../../{rel}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(dir.path(), &["--version"], &[]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o).trim(),
        format!("rtcplane {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_accepts_the_shipped_default_toml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(
        dir.path(),
        &[
            "check-config",
            "--config",
            &repo_file("config/default.toml"),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let printed: toml::Value = toml::from_str(&stdout(&o)).expect("prints TOML");
    assert_eq!(
        printed["http"]["admin_listen"].as_str(),
        Some("127.0.0.1:9090")
    );
    assert_eq!(
        printed["storage"]["url"].as_str(),
        Some("sqlite:./data/rtcplane.db")
    );
    // Nothing was started: no database file appeared.
    assert!(!dir.path().join("data").exists());
}

#[test]
fn check_config_names_an_unknown_key_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[turn]\nenabld = true\n").expect("write");
    let o = run(
        dir.path(),
        &["check-config", "--config", file.to_str().expect("utf8")],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("turn.enabld"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
}

/// `rtcplane check-config` with one environment variable set.
fn check_config_env(dir: &std::path::Path, var: &str, value: &str) -> std::process::Output {
    run(dir, &["check-config"], &[(var, value.into())])
}

/// Refused (exit 2), naming `key`.
fn assert_refused_naming(o: &std::process::Output, key: &str) {
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(o).contains(key), "{}", stderr(o));
}

#[test]
fn wrong_types_and_env_typos_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = check_config_env(dir.path(), "RTCPLANE__STORAGE__MAX_CONNECTIONS", "lots");
    assert_refused_naming(&o, "storage.max_connections");
    let o = check_config_env(dir.path(), "RTCPLANE__HTTP__ADMIN_LISTN", "127.0.0.1:1");
    assert_refused_naming(&o, "http.admin_listn");
}

#[test]
fn an_impossible_listener_buffer_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = check_config_env(
        dir.path(),
        "RTCPLANE__TURN__LISTEN_UDP_BUFFER",
        "4294967296",
    );
    assert_refused_naming(&o, "turn.listen_udp_buffer");
    // 0 (the OS default) and coturn's 2 MiB are fine.
    for ok in ["0", "2097152"] {
        let o = check_config_env(dir.path(), "RTCPLANE__TURN__LISTEN_UDP_BUFFER", ok);
        assert_eq!(o.status.code(), Some(0), "{ok}: {}", stderr(&o));
    }
}

#[test]
fn check_config_hides_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(
        dir.path(),
        &["check-config"],
        &[
            (
                "RTCPLANE__STORAGE__URL",
                "postgres://app:hunter2@db.internal/rtc".into(),
            ),
            (
                "RTCPLANE__REDIS__URL",
                "redis://:swordfish@127.0.0.1:6379".into(),
            ),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        !out.contains("hunter2") && !out.contains("swordfish"),
        "{out}"
    );
    assert!(out.contains("postgres://app:***@db.internal/rtc"), "{out}");
}

#[test]
fn serve_with_a_bad_config_starts_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[http]\nadmin_listen = \"127.0.0.1:9\"\n[bus]\nbackend = \"redis\"\n",
    )
    .expect("write");
    let o = run(
        dir.path(),
        &["serve", "--config", file.to_str().expect("utf8")],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bus.backend"), "{}", stderr(&o));
    assert!(
        !dir.path().join("data").exists(),
        "no database may be created"
    );
}

#[test]
fn missing_config_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(
        dir.path(),
        &["serve", "--config", "/nonexistent/rtcplane.toml"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/rtcplane.toml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn unreachable_database_exits_non_zero_after_the_connect_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let o = run(
        dir.path(),
        &["serve"],
        &[
            (
                "RTCPLANE__STORAGE__URL",
                "postgres://postgres:hunter2@127.0.0.1:1/test".into(),
            ),
            ("RTCPLANE__STORAGE__CONNECT_TIMEOUT", "2s".into()),
            (
                "RTCPLANE__HTTP__ADMIN_LISTEN",
                format!("127.0.0.1:{}", support::free_port()),
            ),
            (
                "RTCPLANE__HTTP__PUBLIC_LISTEN",
                format!("127.0.0.1:{}", support::free_port()),
            ),
        ],
    );
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let err = stderr(&o);
    assert!(err.contains("cannot connect to postgres"), "{err}");
    assert!(!err.contains("hunter2"), "password leaked: {err}");
}

#[test]
fn migrate_creates_the_sqlite_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(dir.path(), &["migrate"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.path().join("data/rtcplane.db").exists());
    let again = run(dir.path(), &["migrate"], &[]);
    assert!(again.status.success());
    assert!(
        stderr(&again).contains("already up to date"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn help_lists_the_commands() {
    let o = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run");
    let out = stdout(&o);
    for cmd in ["serve", "migrate", "check-config"] {
        assert!(out.contains(cmd), "{out}");
    }
}

#[test]
fn webhook_endpoints_in_config_are_checked_and_their_secrets_hidden() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("hooks.toml");
    let endpoint = |secret: &str, extra: &str| {
        format!(
            "[[webhooks.endpoints]]\nurl = \"https://hooks.example.com/rtc\"\nsecret = \"{secret}\"\nevents = [\"turn.*\"]\n{extra}"
        )
    };
    let check = |toml: &str| {
        std::fs::write(&file, toml).expect("write");
        run(
            dir.path(),
            &["check-config", "--config", file.to_str().expect("utf8")],
            &[],
        )
    };
    let o = check(&endpoint("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", ""));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stdout(&o).contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("hooks.example.com"), "{}", stdout(&o));

    for (toml, key) in [
        (endpoint("hunter2", ""), "webhooks.endpoints[0].secret"),
        (
            endpoint("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "events2 = []\n"),
            "events2",
        ),
        (
            "[[webhooks.endpoints]]\nurl = \"gopher://x\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
                .to_owned(),
            "webhooks.endpoints[0].url",
        ),
        (
            "[events]\nredis_publish = true\n".to_owned(),
            "events.redis_publish",
        ),
        (
            "[webhooks]\nretry_initial = \"1h\"\nretry_max_interval = \"1m\"\n".to_owned(),
            "webhooks.retry_max_interval",
        ),
    ] {
        let o = check(&toml);
        assert_eq!(o.status.code(), Some(2), "{toml}");
        assert!(stderr(&o).contains(key), "{key}: {}", stderr(&o));
        assert!(!stderr(&o).contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{}", stderr(&o));
    }
}

#[test]
fn hook_rules_are_checked_naming_the_key_and_keys_hidden() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("hooks.toml");
    let check = |toml: &str| {
        std::fs::write(&file, toml).expect("write");
        run(
            dir.path(),
            &["check-config", "--config", file.to_str().expect("utf8")],
            &[],
        )
    };
    let o = check(
        "[[hooks.rules]]\napps = [\"live\"]\nthen = \"token\"\ntoken_keys = [\"a-very-secret-signing-key\"]\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stdout(&o).contains("a-very-secret-signing-key"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("token_param = \"token\""),
        "{}",
        stdout(&o)
    );
    for (toml, key) in [
        (
            "[[hooks.rules]]\nthen = \"token\"\n",
            "hooks.rules[0].token_keys",
        ),
        ("[[hooks.rules]]\nthen = \"maybe\"\n", "hooks.rules[0].then"),
        (
            "[[hooks.rules]]\nthen = \"allow\"\nsource_cidrs = [\"10.0.0.0/40\"]\n",
            "hooks.rules[0].source_cidrs",
        ),
        (
            "[[hooks.rules]]\nthen = \"forward\"\nforward_urls = [\"gopher://x\"]\n",
            "hooks.rules[0].forward_urls",
        ),
        (
            "[[hooks.rules]]\nthen = \"allow\"\nactions = [\"dance\"]\n",
            "hooks.rules[0].actions",
        ),
        (
            "[hooks]\ndefault_action = \"maybe\"\n",
            "hooks.default_action",
        ),
    ] {
        let o = check(toml);
        assert_eq!(o.status.code(), Some(2), "{toml}");
        assert!(stderr(&o).contains(key), "{key}: {}", stderr(&o));
    }
}

#[test]
fn every_config_example_passes_check_config_with_secrets_hidden() {
    let dir = tempfile::tempdir().expect("tempdir");
    let examples = std::path::Path::new(&repo_file("config/examples")).to_path_buf();
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&examples).expect("config/examples") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let o = run(
            dir.path(),
            &["check-config", "--config", path.to_str().expect("utf8")],
            &[],
        );
        assert!(o.status.success(), "{}: {}", path.display(), stderr(&o));
        let out = stdout(&o);
        assert!(!out.contains("change-me-to-a-long-random-secret"), "{out}");
        assert!(!out.contains("rtcplane:change-me@"), "{out}");
        assert!(!out.contains("sems:CHANGE-ME@"), "{out}");
        checked.push(
            path.file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned(),
        );
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "all-in-one.toml",
            "cluster.toml",
            "coturn-replacement.toml",
            "sems-replacement.toml"
        ]
    );
}
