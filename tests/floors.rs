//! The module floors of DESIGN.md hold in the code: a module imports
//! (`crate::x`) only from floors below its own, so there are no cycles and
//! decisions stay in the one module that owns them.
//!
//! The floors are read from DESIGN.md's floors block, so the document and
//! the code can't drift apart: a new top-level module must be placed on a
//! floor there, or this test fails. Test code (`#[cfg(test)]` modules and
//! `tests.rs` files) may reach anywhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Module name -> floor, from the block of lines `floor N   a · b · c`.
/// On floor 5, `main → cli → server` is a chain: each may import the ones
/// after it.
fn floors(design: &str) -> BTreeMap<String, (u32, usize)> {
    let mut out = BTreeMap::new();
    for line in design.lines() {
        let Some(rest) = line.strip_prefix("floor ") else {
            continue;
        };
        let (n, modules) = rest.split_once(' ').expect("floor line: `floor N  modules`");
        let n: u32 = n.parse().expect("floor number");
        // Drop a trailing "(comment)".
        let modules = modules.split('(').next().unwrap_or_default();
        for (rank, name) in modules
            .split(['·', '→'])
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .enumerate()
        {
            out.insert(name.to_string(), (n, rank));
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without its `#[cfg(test)]` tail (test modules sit at the end
/// of a file in this code base).
fn non_test(src: &str) -> &str {
    match src.find("#[cfg(test)]\nmod ") {
        Some(i) => &src[..i],
        None => src,
    }
}

/// The `crate::name` paths used in `src` (module names only).
fn imports(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find("crate::") {
        let tail = &rest[i + "crate::".len()..];
        let name: String = tail
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `use crate::{a, b}` names its modules inside the braces.
        if name.is_empty() && tail.starts_with('{') {
            let inner = &tail[1..tail.find('}').unwrap_or(tail.len())];
            out.extend(
                inner
                    .split(',')
                    .map(|m| m.trim().split("::").next().unwrap_or_default().to_string())
                    .filter(|m| !m.is_empty()),
            );
        } else if !name.is_empty() {
            out.push(name);
        }
        rest = tail;
    }
    out
}

#[test]
fn modules_import_only_from_floors_below() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let floors = floors(&std::fs::read_to_string(root.join("DESIGN.md")).unwrap());
    assert!(
        floors.len() >= 15,
        "floors block not found in DESIGN.md: {floors:?}"
    );

    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut checked = 0;
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(root.join("src")).unwrap();
        let module = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let Some(&(floor, rank)) = floors.get(&module) else {
            wrong.push(format!(
                "{}: module `{module}` is on no floor in DESIGN.md",
                rel.display()
            ));
            continue;
        };
        let src = std::fs::read_to_string(file).unwrap();
        for target in imports(non_test(&src)) {
            if target == module {
                continue;
            }
            let Some(&(to_floor, to_rank)) = floors.get(&target) else {
                wrong.push(format!(
                    "{}: imports `{target}`, which is on no floor",
                    rel.display()
                ));
                continue;
            };
            // Below, or later in floor 5's chain (main → cli → server).
            let allowed = to_floor < floor || (floor == 5 && to_floor == 5 && to_rank > rank);
            if !allowed {
                wrong.push(format!(
                    "{}: `{module}` (floor {floor}) imports `{target}` (floor {to_floor})",
                    rel.display()
                ));
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} imports found: is the scan broken?");
    assert!(wrong.is_empty(), "floor violations:\n{}", wrong.join("\n"));
}

#[test]
fn the_import_scan_sees_what_it_must() {
    // The checker itself: braces, paths and test tails.
    let src = "use crate::config::X;\nuse crate::{queue, tls::Y};\nfn f() { crate::scan::z(); }\n\
               #[cfg(test)]\nmod tests { use crate::server; }\n";
    assert_eq!(imports(non_test(src)), ["config", "queue", "tls", "scan"]);
    let f = floors("floor 5   main → cli → server   (x)\nfloor 1   scan · config\n");
    assert_eq!(f["cli"], (5, 1));
    assert_eq!(f["config"], (1, 1));
}
