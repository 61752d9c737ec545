//! The layers of `src/` only look down (see ARCHITECTURE.md): every
//! `crate::` path in the code of a module names its own layer or a lower
//! one. Run with `--nocapture` to print the graph of which layer uses which:
//!
//! ```text
//! cargo test --release --test architecture -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, bottom up, by the top-level module (directory) under `src/`.
const LAYERS: [(&str, usize); 5] = [
    ("base", 0),
    ("nexus", 1),
    ("dispatch", 2),
    ("backend", 3),
    ("engine", 4),
];

/// Names re-exported at the crate root, by the layer that defines them
/// (code may name them as `crate::Name`).
const ROOT_NAMES: [(&str, usize); 23] = [
    ("testing", 0),
    ("poll_timeout_ms", 0),
    ("CallbackPanic", 0),
    ("Error", 0),
    ("Result", 0),
    ("Unsupported", 0),
    ("Interest", 0),
    ("Readiness", 0),
    ("StaleCounts", 0),
    ("Stats", 0),
    ("Generation", 0),
    ("StaleReason", 0),
    ("Token", 0),
    ("MAX_SLOTS", 0),
    ("BackendKind", 2),
    ("Occurred", 2),
    ("OsEventHooks", 3),
    ("ChildEvent", 4),
    ("FdEvent", 4),
    ("PollSet", 4),
    ("TimerEvent", 4),
    ("Engine", 4),
    ("Waker", 4),
];

fn layer_named(name: &str) -> Option<usize> {
    LAYERS
        .iter()
        .chain(ROOT_NAMES.iter())
        .find(|(n, _)| *n == name)
        .map(|(_, l)| *l)
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (line comments and doc
/// comments: a doc link may name any public item).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segment after each `crate::` in `code`.
fn crate_paths(code: &str) -> Vec<String> {
    code.match_indices("crate::")
        .filter(|(i, _)| {
            // Not `$crate::` (macros) or part of a longer identifier.
            let before = code[..*i].chars().next_back();
            !before.is_some_and(|c| c == '$' || c.is_alphanumeric() || c == '_')
        })
        .map(|(i, m)| {
            code[i + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn no_layer_names_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut edges: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut violations = Vec::new();
    for path in &all {
        let rel = path.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let Some(own) = layer_named(top.trim_end_matches(".rs")) else {
            // lib.rs (the root), bench_api.rs and the simulation binary
            // stand above every layer.
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        let code = code(&text);
        assert!(
            !code.contains("super::super"),
            "{}: reaches out of its module with super::super",
            rel.display()
        );
        for name in crate_paths(&code) {
            let Some(used) = layer_named(&name) else {
                violations.push(format!("{}: crate::{name} is in no layer", rel.display()));
                continue;
            };
            *edges.entry((own, used)).or_default() += 1;
            if used > own {
                violations.push(format!(
                    "{} (layer {own}) names crate::{name} (layer {used})",
                    rel.display()
                ));
            }
        }
    }
    let name = |l: usize| LAYERS[l].0;
    println!("layer uses layer (count of crate:: paths):");
    for ((from, to), n) in &edges {
        println!("  {} -> {}: {n}", name(*from), name(*to));
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// Every path ARCHITECTURE.md names (a backquoted word with a `/` or a
/// `.rs`/`.md`/`.h` ending, relative to the repository root, or to `src/`
/// for `layer/file.rs` forms) exists.
#[test]
fn architecture_md_names_only_paths_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    let mut checked = 0;
    for (i, part) in text.split('`').enumerate() {
        // Odd parts are inside backquotes.
        let is_path = i % 2 == 1
            && !part.contains(' ')
            && !part.contains("::")
            && (part.ends_with(".rs")
                || part.ends_with(".md")
                || part.ends_with(".h")
                || part.ends_with('/'));
        if !is_path {
            continue;
        }
        let path = part.trim_end_matches('/');
        let candidates = [root.join(path), root.join("src").join(path)];
        checked += 1;
        if !candidates.iter().any(|p| p.exists()) {
            missing.push(part.to_owned());
        }
    }
    assert!(
        checked > 20,
        "only {checked} paths found: is the check still reading them?"
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}
