//! Tidy rules: the repository's own shape, checked as tests (they run in `cargo xtask ci`).

use std::path::Path;

use crate::workspace_root;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn members() -> Vec<std::path::PathBuf> {
    let root = workspace_root();
    let mut out: Vec<_> = std::fs::read_dir(root.join("crates"))
        .expect("crates/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    out.push(root.join("xtask"));
    out.sort();
    out
}

#[test]
fn every_crate_is_in_the_architecture_codemap() {
    let arch = read(&workspace_root().join("ARCHITECTURE.md"));
    for m in members() {
        let name = m.file_name().and_then(|n| n.to_str()).expect("name");
        let rel = if name == "xtask" {
            "xtask/".to_owned()
        } else {
            format!("crates/{name}")
        };
        assert!(
            arch.contains(&format!("`{rel}")),
            "ARCHITECTURE.md has no codemap entry for `{rel}`"
        );
    }
}

#[test]
fn members_take_versions_and_lints_from_the_workspace() {
    for m in members() {
        let manifest: toml::Value =
            toml::from_str(&read(&m.join("Cargo.toml"))).expect("valid Cargo.toml");
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) else {
                continue;
            };
            for (dep, spec) in deps {
                let from_workspace =
                    spec.get("workspace").and_then(toml::Value::as_bool) == Some(true);
                assert!(
                    from_workspace,
                    "{}: [{section}] {dep} must be `{dep}.workspace = true` (versions live in [workspace.dependencies])",
                    m.display()
                );
            }
        }
        let lints = manifest
            .get("lints")
            .and_then(|l| l.get("workspace"))
            .and_then(toml::Value::as_bool);
        assert_eq!(
            lints,
            Some(true),
            "{}: needs `[lints] workspace = true`",
            m.display()
        );
        for key in ["version", "edition", "license", "publish", "rust-version"] {
            let inherited = manifest["package"]
                .get(key)
                .and_then(|v| v.get("workspace"))
                .and_then(toml::Value::as_bool);
            assert_eq!(
                inherited,
                Some(true),
                "{}: package.{key} must come from the workspace",
                m.display()
            );
        }
    }
}

#[test]
fn every_backend_has_the_same_migrations() {
    let root = workspace_root().join("migrations");
    let list = |backend: &str| {
        let mut names: Vec<String> = std::fs::read_dir(root.join(backend))
            .expect("migrations dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let sqlite = list("sqlite");
    assert!(!sqlite.is_empty());
    assert_eq!(
        list("postgres"),
        sqlite,
        "migrations/postgres must mirror migrations/sqlite"
    );
    assert_eq!(
        list("mysql"),
        sqlite,
        "migrations/mysql must mirror migrations/sqlite"
    );
    for name in &sqlite {
        let (version, rest) = name.split_once('_').expect("NNNN_name.sql");
        assert!(
            version.len() == 4 && version.chars().all(|c| c.is_ascii_digit()),
            "{name}: 4-digit version"
        );
        assert!(rest.ends_with(".sql"), "{name}");
    }
}

#[test]
fn crate_roots_say_what_they_are() {
    for m in members() {
        for root in ["src/lib.rs", "src/main.rs"] {
            let path = m.join(root);
            if path.exists() {
                assert!(
                    read(&path).starts_with("//!"),
                    "{} must open with a `//!` paragraph",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn no_stubs_or_debug_prints_in_sources() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    for m in members() {
        walk(&m.join("src"), &mut files);
    }
    let banned = [
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("dbg", "!("),
    ];
    for f in files {
        let text = read(&f);
        for b in banned {
            assert!(!text.contains(b), "{}: contains {b}", f.display());
        }
    }
}
