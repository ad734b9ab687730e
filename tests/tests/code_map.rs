//! `docs/architecture.md`'s code map names every module of the workspace: a module added without
//! a line there fails here, with the file it is in.

use std::path::{Path, PathBuf};

/// The workspace's root (this crate sits in `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// Every `.rs` file of the workspace's source, not its tests (a crate's `tests/` folder, the
/// end-to-end suites in `tests/tests`) nor build scripts nor what cargo builds.
fn modules(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable folder") {
        let path = entry.expect("a readable entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.is_dir() {
            let skipped = name.starts_with('.') || matches!(name, "target" | "tests" | "node_modules");
            if !skipped {
                modules(&path, found);
            }
        } else if name.ends_with(".rs") && name != "build.rs" {
            found.push(path);
        }
    }
}

/// The words a code map uses for a module: its file (`lease.rs`), its folder (`bus/`) or its
/// name in backticks (`` `lease` ``).
fn named(map: &str, module: &str) -> bool {
    [
        format!("{module}.rs"),
        format!("{module}/"),
        format!("`{module}`"),
    ]
    .iter()
    .any(|word| map.contains(word.as_str()))
}

#[test]
fn the_code_map_names_every_module() {
    let root = root();
    let map = std::fs::read_to_string(root.join("docs/architecture.md")).expect("docs/architecture.md");
    let mut files = vec![];
    for top in std::fs::read_dir(&root).expect("the workspace") {
        let top = top.expect("a readable entry").path();
        let name = top.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if top.is_dir() && !name.starts_with('.') && name != "target" {
            // The end-to-end harness's own library (`tests/src`) is code too.
            if name == "tests" {
                modules(&top.join("src"), &mut files);
            } else {
                modules(&top, &mut files);
            }
        }
    }
    assert!(
        files.len() > 100,
        "found only {} modules under {}",
        files.len(),
        root.display()
    );
    let missing: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let module = f.file_stem()?.to_str()?;
            let entry = matches!(module, "main" | "lib" | "mod");
            (!entry && !named(&map, module)).then(|| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md's code map does not name these modules: {missing:#?}"
    );
}
