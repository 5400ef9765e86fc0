//! The workspace's layout is the one README's crate map and docs/DESIGN.md §1 give: each
//! member folder is on the map, `schemas` (the wire contract) and `feature-store` (Redis)
//! pull in neither axum nor rdkafka, and only `http` and `connectors` serve HTTP.

use std::collections::BTreeMap;

use custflow_tests::repo_root;

/// Each workspace member folder with the names of its normal dependencies.
fn members() -> BTreeMap<String, Vec<String>> {
    let root = repo_root();
    let read = |p: &std::path::Path| -> toml::Value {
        toml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let top = read(&root.join("Cargo.toml"));
    let folders: Vec<String> = top["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .filter(|m| m != ".")
        .collect();
    folders
        .into_iter()
        .map(|f| {
            let manifest = read(&root.join(&f).join("Cargo.toml"));
            let deps = manifest
                .get("dependencies")
                .and_then(|d| d.as_table())
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default();
            (f, deps)
        })
        .collect()
}

#[test]
fn the_crate_map_holds_every_member_and_the_contract_crates_stay_lean() {
    let members = members();
    assert!(members.len() >= 10, "{members:?}");
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let design = std::fs::read_to_string(repo_root().join("docs/DESIGN.md")).unwrap();
    for folder in members.keys() {
        let cell = format!("| `{folder}/` |");
        assert!(readme.contains(&cell), "README's crate map lacks {folder}/");
        assert!(design.contains(&cell), "DESIGN §1 lacks {folder}/");
    }
    for lean in ["schemas", "feature-store", "models", "metrics"] {
        let deps = &members[lean];
        for heavy in ["axum", "rdkafka", "tokio-stream", "sqlx"] {
            assert!(
                !deps.iter().any(|d| d == heavy),
                "{lean} depends on {heavy}: {deps:?}"
            );
        }
    }
    let serving: Vec<&String> = members
        .iter()
        .filter(|(_, deps)| deps.iter().any(|d| d == "axum"))
        .map(|(f, _)| f)
        .collect();
    for f in &serving {
        assert!(
            ["http", "connectors", "tests"].contains(&f.as_str()),
            "{f} depends on axum: the HTTP API lives in http/"
        );
    }
    assert!(serving.iter().any(|f| *f == "http"), "{serving:?}");
}
