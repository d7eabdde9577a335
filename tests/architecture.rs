//! Keeps the layering of ARCHITECTURE.md true: every top-level module of `src/` sits in one layer
//! of its table, and imports only modules of lower layers (so no two modules import each other
//! and no cycle can form). Reads the table from ARCHITECTURE.md itself, so the document and this
//! check cannot drift apart; reads every `crate::<module>` path in the code (tests included,
//! comments excluded).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer table: module name -> layer number (1 is the top).
fn layers(root: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let start = text
        .find("<!-- layers -->")
        .expect("ARCHITECTURE.md marks its layer table with <!-- layers -->");
    let end = text[start..]
        .find("<!-- /layers -->")
        .expect("ARCHITECTURE.md closes its layer table with <!-- /layers -->");
    let mut layers = BTreeMap::new();
    for line in text[start..start + end].lines() {
        // | 4 | `tui`, `scenario` | what they are |
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(layer) = cells.get(1).and_then(|c| c.parse::<usize>().ok()) else {
            continue;
        };
        for module in cells[2].split(',') {
            let name = module.trim().trim_matches('`').trim_end_matches(".rs");
            assert!(
                layers.insert(name.to_owned(), layer).is_none(),
                "ARCHITECTURE.md puts `{name}` in two layers"
            );
        }
    }
    assert!(
        !layers.is_empty(),
        "the layer table of ARCHITECTURE.md has no rows"
    );
    layers
}

/// Every `.rs` file under `dir`.
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

/// The top-level module a file of `src/` belongs to (`main` for the binary).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The code of a line without its comment (`//` outside a string literal).
fn code(line: &str) -> &str {
    let mut in_str = false;
    let bytes = line.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'"' if i == 0 || bytes[i - 1] != b'\\' => in_str = !in_str,
            b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The modules a line names through `prefix` (`crate::` in the library, `fleetsim::` in the
/// binary).
fn named<'a>(line: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find(prefix) {
        let after = &rest[at + prefix.len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !preceded && end > 0 {
            found.push(&after[..end]);
        }
        rest = &after[end..];
    }
    found
}

/// One import of a module by another: (from, to) -> the first place it happens.
fn imports(src: &Path) -> BTreeMap<(String, String), String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut edges = BTreeMap::new();
    for file in files {
        let from = module_of(src, &file);
        if from == "lib" {
            continue;
        }
        let prefix = if from == "main" {
            "fleetsim::"
        } else {
            "crate::"
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for to in named(code(line), prefix) {
                if to != from {
                    edges
                        .entry((from.clone(), to.to_owned()))
                        .or_insert_with(|| {
                            format!("{}:{}: {}", file.display(), n + 1, line.trim())
                        });
                }
            }
        }
    }
    edges
}

#[test]
fn every_import_goes_down_the_layer_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let layers = layers(root);

    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(&src, f))
        .filter(|m| m != "lib")
        .collect();
    let missing: Vec<&String> = modules
        .iter()
        .filter(|m| !layers.contains_key(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "modules missing from the layer table of ARCHITECTURE.md: {missing:?}"
    );
    let stale: Vec<&String> = layers.keys().filter(|m| !modules.contains(*m)).collect();
    assert!(
        stale.is_empty(),
        "ARCHITECTURE.md's layer table names modules that do not exist: {stale:?}"
    );

    let edges = imports(&src);
    let cycles: Vec<String> = edges
        .keys()
        .filter(|(a, b)| a < b && edges.contains_key(&(b.clone(), a.clone())))
        .map(|(a, b)| format!("{a} <-> {b}"))
        .collect();
    let upward: Vec<String> = edges
        .iter()
        .filter(|((from, to), _)| layers[from] >= layers[to])
        .map(|((from, to), at)| {
            format!(
                "{from} (layer {}) imports {to} (layer {}): {at}",
                layers[from], layers[to]
            )
        })
        .collect();
    assert!(
        cycles.is_empty() && upward.is_empty(),
        "modules that import each other: {cycles:?}\nimports that do not go down the layer table \
         of ARCHITECTURE.md (a module may use only modules of lower layers):\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_import_scanner_sees_paths_and_skips_comments() {
    assert_eq!(named("use crate::hub::Hub;", "crate::"), ["hub"]);
    assert_eq!(
        named(
            "let x = crate::units::fmt_us(crate::clock::now());",
            "crate::"
        ),
        ["units", "clock"]
    );
    assert!(named("use mycrate::hub;", "crate::").is_empty());
    assert_eq!(code("let a = 1; // see crate::hub"), "let a = 1; ");
    assert_eq!(code("/// [`crate::fleet`]"), "");
    assert_eq!(code("let s = \"a // b\"; x"), "let s = \"a // b\"; x");
}
