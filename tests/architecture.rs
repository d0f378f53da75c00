//! The layering ARCHITECTURE.md describes, checked on the source: no import cycle between the crate's top-level
//! modules (data flows one way), and the rules (`assess`, `record`) import nothing that does I/O or knows JSON.
//!
//! Why a test on the text rather than a crate per layer: the modules share one crate for build time and
//! simplicity, so the compiler does not enforce the direction; this test does, in `cargo test`. It reads code
//! only: comments (where doc links name other modules freely) and `#[cfg(test)]` modules are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// A file's code: up to its first `#[cfg(test)]`, without comment lines or trailing comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate's top-level module of each source file (`src/http/serve.rs` → `http`), with the modules its code
/// names as `crate::x`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "main" || module == "lib" {
            continue;
        }
        let code = code(&std::fs::read_to_string(&file).unwrap());
        let imports = graph.entry(module.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                imports.insert(name);
            }
        }
    }
    graph
}

/// A cycle through `start`, if there is one: the path of modules back to it.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if visit(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    visit(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let graph = graph();
    assert!(graph.len() > 10, "the source was read: {graph:?}");
    assert!(graph["http"].contains("service"), "imports are found: {graph:?}");
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|module| cycle_from(&graph, module))
        .map(|path| path.join(" → "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_rules_know_no_io_and_no_json() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src.join("assess"), &mut files);
    files.push(src.join("record.rs"));
    for file in files {
        let code = code(&std::fs::read_to_string(&file).unwrap());
        for forbidden in [
            "serde_json",
            "tokio",
            "axum",
            "hyper",
            "reqwest",
            "sqlx",
            "std::fs",
            "std::net",
        ] {
            assert!(!code.contains(forbidden), "{} uses {forbidden}", file.display());
        }
        for layer in [
            "crate::http",
            "crate::wire",
            "crate::service",
            "crate::store",
            "crate::fetch",
        ] {
            assert!(!code.contains(layer), "{} imports {layer}", file.display());
        }
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycle_from(&graph, "a").unwrap(), ["a", "b", "c", "a"]);
    graph.get_mut("c").unwrap().clear();
    assert_eq!(cycle_from(&graph, "a"), None);
}

#[test]
fn every_snapshot_is_referenced_by_its_test_file() {
    // insta keeps a `.snap` file after the assertion that wrote it is gone; a stale one then documents an answer
    // nobody checks. `tests/snapshots/<file>__<name>.snap` must name a test file that mentions `"<name>"`.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("tests/snapshots")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".snap") else {
            continue;
        };
        seen += 1;
        let (file, snapshot) = stem.split_once("__").unwrap_or((stem, ""));
        let source = std::fs::read_to_string(root.join("tests").join(format!("{file}.rs"))).unwrap_or_default();
        if snapshot.is_empty() || !source.contains(&format!("\"{snapshot}\"")) {
            stale.push(name);
        }
    }
    assert!(seen > 0, "no snapshots found");
    assert!(stale.is_empty(), "snapshots no test refers to: {stale:?}");
}
