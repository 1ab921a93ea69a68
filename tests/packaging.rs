//! The packaging files agree with the crate: the Dockerfile's build stage
//! gets every file the build reads, and its dependency-cache step stubs
//! every explicit target the manifest names (Cargo refuses a manifest whose
//! targets are missing). No Docker engine is needed to check this.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The top-level directories and files a `COPY <src> ...` line of the
/// build stage brings in.
fn build_stage_copies(dockerfile: &str) -> Vec<String> {
    let build = dockerfile
        .split("\nFROM ")
        .find(|stage| stage.contains(" AS build"))
        .expect("a build stage");
    build
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[..parts.len() - 1].to_vec()
        })
        .map(|p| p.trim_end_matches('/').to_string())
        .collect()
}

#[test]
fn the_docker_build_stage_copies_what_the_build_reads() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let copies = build_stage_copies(&dockerfile);
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();

    let mut needed = vec![
        "Cargo.toml".to_string(),
        "Cargo.lock".to_string(),
        "src".to_string(),
    ];
    // askama reads templates/ at compile time.
    if manifest["dependencies"].get("askama").is_some() {
        needed.push("templates".into());
    }
    // Explicit bench targets: copied for the real build, stubbed for the
    // dependency cache.
    for bench in manifest
        .get("bench")
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
    {
        let name = bench["name"].as_str().unwrap();
        needed.push("benches".into());
        assert!(
            dockerfile.contains(&format!("> benches/{name}.rs")),
            "the dependency-cache step does not stub benches/{name}.rs"
        );
    }
    // Files compiled in with include_str!/include_bytes!, by their first
    // directory under the crate root.
    for file in walk(&root().join("src")) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (i, _) in text.match_indices("include_") {
            let rest = &text[i..];
            if !(rest.starts_with("include_str!(\"") || rest.starts_with("include_bytes!(\"")) {
                continue;
            }
            let quoted = rest.split('"').nth(1).unwrap();
            let target = file.parent().unwrap().join(quoted);
            let target = std::fs::canonicalize(&target).unwrap_or_else(|_| panic!("{quoted} from {file:?}"));
            let rel = target
                .strip_prefix(std::fs::canonicalize(root()).unwrap())
                .unwrap();
            needed.push(
                rel.components()
                    .next()
                    .unwrap()
                    .as_os_str()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    for n in needed {
        assert!(
            copies.contains(&n),
            "the Dockerfile's build stage does not COPY {n} (it copies {copies:?})"
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}
