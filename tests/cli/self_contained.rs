//! The repository carries what its tests, benchmarks and scripts read: none of them may
//! refer to a path outside the clone (a sibling folder, someone's home, this machine's
//! work folder) other than through a documented setting. A reference to the
//! surroundings fails here, in CI, instead of on a user's machine.

use std::path::{Component, Path, PathBuf};

use regex::Regex;

/// Files that may name a place outside the repository: `.ci/run` gives the settings for
/// optional external tools of the CI machine (README, "Optional external tools"), and
/// this check's own examples of what it refuses.
const EXEMPT: &[&str] = &[".ci/run", "tests/cli/self_contained.rs"];

/// The kinds of file that tests, benchmarks and scripts are made of.
fn checked(path: &str) -> bool {
    let ext = Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    let source = matches!(
        ext,
        "rs" | "sh" | "py" | "lua" | "toml" | "yaml" | "yml" | "sql"
    ) || path.starts_with(".ci/");
    source && !EXEMPT.contains(&path) && !path.starts_with("fuzz/corpus/")
}

/// The folder a relative path in `file` is read from: the file's own folder for
/// `include_str!`-style paths and Cargo manifests, the repository root where the line
/// joins the tests' `repo_root()` and for scripts (they `cd` there first), and the
/// crate's folder for other Rust paths (tests and benches run with the crate as their
/// working folder and join `CARGO_MANIFEST_DIR`).
fn base_of(file: &str, line: &str, crate_dirs: &[String]) -> PathBuf {
    let dir = Path::new(file).parent().unwrap_or(Path::new("")).to_owned();
    if file.ends_with(".toml")
        || line.contains("include_str!")
        || line.contains("include_bytes!")
        || line.contains("#[path")
    {
        return dir;
    }
    if file.ends_with(".rs") && !line.contains("repo_root()") {
        return crate_dirs
            .iter()
            .filter(|c| c.is_empty() || file.starts_with(&format!("{c}/")))
            .max_by_key(|c| c.len())
            .map(PathBuf::from)
            .unwrap_or_default();
    }
    PathBuf::new()
}

/// Whether `rel` joined to `base` (both relative to the repository root) leaves it.
fn escapes(base: &Path, rel: &str) -> bool {
    let mut depth: i64 = 0;
    for c in base.join(rel).components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// Every reference in `text` (the file `file`) to a place outside the repository, as
/// `file:line: reason`.
pub(crate) fn violations(file: &str, text: &str, crate_dirs: &[String]) -> Vec<String> {
    let relative = Regex::new(r"((?:\.\./)+)[A-Za-z0-9_$.{-]").unwrap();
    // Absolute places that belong to a machine, not to the clone (the build cache under
    // ~/.cache and cargo's own folder excepted).
    let absolute =
        Regex::new(r#"(^|[\s"'=(:])(/work/|/root/|/home/|(\$HOME|\$\{HOME\}|~)/(?:[^.]|\.[^cC]))"#)
            .unwrap();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for m in relative.captures_iter(line) {
            let base = base_of(file, line, crate_dirs);
            let whole = m.get(0).map_or("", |g| g.as_str());
            if escapes(&base, &whole[..whole.len() - 1]) {
                out.push(format!(
                    "{file}:{}: `{whole}…` resolves outside the repository (from {}/)",
                    n + 1,
                    base.display()
                ));
            }
        }
        if let Some(m) = absolute.captures(line) {
            out.push(format!(
                "{file}:{}: `{}` names a place on this machine, not in the repository",
                n + 1,
                m.get(2).map_or("", |g| g.as_str())
            ));
        }
    }
    out
}

/// The repository's tracked files (`git ls-files`), or every file but build output and
/// runtime data where git is not at hand.
fn tracked(root: &Path) -> Vec<String> {
    let git = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output();
    if let Some(out) = git
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty())
    {
        return out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
    }
    let mut files = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if ["target", "data", ".git"].contains(&rel.as_str()) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(rel);
            }
        }
    }
    files
}

#[test]
fn tests_benchmarks_and_scripts_read_nothing_outside_the_repository() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let files = tracked(&root);
    let crate_dirs: Vec<String> = files
        .iter()
        .filter_map(|f| f.strip_suffix("Cargo.toml"))
        .map(|d| d.trim_end_matches('/').to_owned())
        .collect();
    assert!(
        crate_dirs.contains(&String::new()) && crate_dirs.contains(&"models".to_owned()),
        "the workspace's manifests were not found: {crate_dirs:?}"
    );
    let mut scanned = 0;
    let mut found = Vec::new();
    for f in files.iter().filter(|f| checked(f)) {
        let Ok(text) = std::fs::read_to_string(root.join(f)) else {
            continue;
        };
        scanned += 1;
        found.extend(violations(f, &text, &crate_dirs));
    }
    assert!(scanned > 100, "only {scanned} files scanned");
    assert!(
        found.is_empty(),
        "tests, benchmarks or scripts refer to paths outside the repository; move what they \
         read into it (testdata/, scripts/peers/) or read it through a documented setting:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_finds_the_references_it_is_for() {
    let crates = vec![String::new(), "models".to_owned(), "tests".to_owned()];
    let bad = [
        (
            "models/tests/x.rs",
            r#"PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")"#,
        ),
        ("tests/src/lib.rs", r#"repo_root().join("../shared/data")"#),
        ("src/x.rs", r#"std::fs::read("../elsewhere/file")"#),
        (
            "scripts/bench.sh",
            r#"RAW="$ROOT/../shared/peers/kafka_raw.py""#,
        ),
        ("scripts/bench.sh", "python ../peers/x.py"),
        ("scripts/bench.sh", "cp /work/shared/data/x ."),
        ("tests/cli/x.rs", r#"let p = "/root/data/x";"#),
        ("scripts/x.sh", "ls $HOME/fluvio/bin"),
        (
            "schemas/src/x.rs",
            r#"include_str!("../../../outside.avsc")"#,
        ),
    ];
    for (file, line) in bad {
        assert_eq!(violations(file, line, &crates).len(), 1, "{file}: {line}");
    }
    let good = [
        (
            "models/benches/m.rs",
            r#"PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata")"#,
        ),
        (
            "schemas/src/avro.rs",
            r#"include_str!("../avro/Customer.avsc")"#,
        ),
        ("tests/tests/f.rs", r#"#[path = "../../fuzz/src/lib.rs"]"#),
        (
            "fuzz/Cargo.toml",
            r#"custflow-schemas = { path = "../schemas" }"#,
        ),
        (
            "scripts/lib.sh",
            r#"CACHE="${CUSTFLOW_CACHE:-$HOME/.cache/custflow}""#,
        ),
        ("scripts/lib.sh", r#"export PATH="$HOME/.cargo/bin:$PATH""#),
        (
            "scripts/x.sh",
            r#"ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)""#,
        ),
        ("scripts/x.sh", r#"FLUVIO="${CUSTFLOW_FLUVIO_HOME:-}""#),
    ];
    for (file, line) in good {
        assert_eq!(
            violations(file, line, &crates),
            Vec::<String>::new(),
            "{file}: {line}"
        );
    }
}
