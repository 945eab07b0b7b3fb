//! The structure rules of issue 13, checked on every test run so they stay
//! true: no import circle between the modules of a crate at any folder
//! depth (a module and its ancestors aside), no non-test source file over
//! `MAX_LINES`, and every module path (`a::b::Item`) and source path
//! ARCHITECTURE.md names exists.
//!
//! It reads the sources as text (`use crate::…`, paths written inline,
//! `super::…`), which is what a reader follows too; a `#[cfg(test)] mod
//! tests { … }` block and files under `tests` are test code and skipped.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Result};

/// The longest a non-test source file may be.
pub const MAX_LINES: usize = 500;

/// Every crate's source folder.
const ROOTS: &[&str] = &[
    "dhcp-common/src",
    "dhcp-ebpf/src",
    "dhcp-user/src",
    "loadgen/src",
    "ramp/src",
    "tests/src",
    "xtask/src",
];

pub fn check() -> Result<()> {
    let mut problems = Vec::new();
    for root in ROOTS {
        let files = sources(Path::new(root))?;
        for (module, (path, text)) in &files {
            let n = text.lines().count();
            if n > MAX_LINES {
                problems.push(format!(
                    "{}: {n} lines (module {module}), over {MAX_LINES}",
                    path.display()
                ));
            }
        }
        let texts: BTreeMap<String, String> = files.into_iter().map(|(m, (_, t))| (m, t)).collect();
        problems.extend(circles(&texts).into_iter().map(|c| format!("{root}: {c}")));
    }
    problems.extend(architecture_names(&fs::read_to_string("ARCHITECTURE.md")?)?);
    if !problems.is_empty() {
        bail!("structure:\n  {}", problems.join("\n  "));
    }
    println!("structure: no import circle, no source file over {MAX_LINES} lines");
    Ok(())
}

/// The names ARCHITECTURE.md gives in backquotes that do not exist: a
/// daemon module path (`daemon::commit::keep_kernel_grants`: the longest
/// module prefix, then at most one item defined or re-exported there) or
/// a source path (`dhcp-ebpf/src/fast.rs`, `tests/tests/model.rs`).
fn architecture_names(doc: &str) -> Result<Vec<String>> {
    let daemon = sources(Path::new("dhcp-user/src"))?;
    let modules: BTreeSet<String> = daemon.keys().cloned().collect();
    let mut missing = Vec::new();
    for name in doc.split('`').skip(1).step_by(2) {
        let is_path = |c: char| c.is_alphanumeric() || "_:".contains(c);
        if name.contains("::") && name.chars().all(is_path) {
            let name = name.trim_end_matches("::");
            let top = name.split("::").next().unwrap_or("");
            if !modules.contains(top) {
                continue;
            }
            let found = resolve(name, &modules).is_some_and(|m| {
                let rest = name[m.len()..].trim_start_matches("::");
                rest.is_empty() || (!rest.contains("::") && defines(&daemon[m].1, rest))
            });
            if !found {
                missing.push(format!(
                    "ARCHITECTURE.md names `{name}`, which is not in dhcp-user/src"
                ));
            }
        } else if name.ends_with(".rs") && name.contains('/') && !name.contains('*') {
            let roots = ["", "dhcp-ebpf/", "dhcp-user/"];
            if !roots
                .iter()
                .any(|r| Path::new(&format!("{r}{name}")).exists())
            {
                missing.push(format!(
                    "ARCHITECTURE.md names `{name}`, which does not exist"
                ));
            }
        }
    }
    Ok(missing)
}

/// Whether a module's text defines or re-exports `item`.
fn defines(text: &str, item: &str) -> bool {
    let kinds = [
        "fn", "struct", "enum", "trait", "const", "static", "type", "mod",
    ];
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .any(|w| w[1] == item && kinds.contains(&w[0]))
        || text.split("pub use ").skip(1).any(|u| {
            u.split(';')
                .next()
                .unwrap_or("")
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == item)
        })
}

/// The non-test modules under `root`, by path (`a::b`, "" for the crate
/// root), with their file and text. `bin/` holds other crates.
fn sources(root: &Path) -> Result<BTreeMap<String, (PathBuf, String)>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            let rel = p.strip_prefix(root)?.to_path_buf();
            let top = rel.components().next().map(|c| c.as_os_str().to_owned());
            if top.as_deref() == Some("bin".as_ref()) {
                continue;
            }
            if p.is_dir() {
                if p.file_name() != Some("tests".as_ref()) {
                    dirs.push(p);
                }
                continue;
            }
            if p.extension() != Some("rs".as_ref()) || p.file_name() == Some("tests.rs".as_ref()) {
                continue;
            }
            let mut parts: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            let text = without_tests(&fs::read_to_string(&p)?);
            out.insert(parts.join("::"), (p, text));
        }
    }
    Ok(out)
}

/// The text before an inline `#[cfg(test)] mod tests {`, comments and
/// string literals blanked (a path in a doc comment is not an import).
fn without_tests(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(&blank_strings(code));
        out.push('\n');
    }
    match out.find("#[cfg(test)]\nmod tests {") {
        Some(i) => out[..i].to_string(),
        None => out,
    }
}

fn blank_strings(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut in_str = false;
    let mut escaped = false;
    for c in code.chars() {
        if in_str {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    in_str = false;
                    out.push('"');
                }
                _ => escaped = false,
            }
        } else {
            in_str = c == '"';
            out.push(c);
        }
    }
    out
}

/// The module paths `text` names after `crate::` (use trees expanded).
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        use_tree("", rest, &mut out);
    }
    out
}

/// Expands the use tree at the start of `s` under `prefix`; returns the
/// length it read.
fn use_tree(prefix: &str, s: &str, out: &mut Vec<String>) -> usize {
    let mut i = 0;
    let b = s.as_bytes();
    let mut path = prefix.to_string();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'{' {
            i += 1;
            loop {
                while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    return i + 1;
                }
                let n = use_tree(&path, &s[i..], out);
                if n == 0 {
                    return i;
                }
                i += n;
            }
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i == start {
            break;
        }
        let seg = &s[start..i];
        if seg != "self" {
            if !path.is_empty() {
                path.push_str("::");
            }
            path.push_str(seg);
        }
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            break;
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
    i
}

/// The longest prefix of `path` that is a module.
fn resolve<'a>(path: &str, modules: &'a BTreeSet<String>) -> Option<&'a String> {
    let segs: Vec<&str> = path.split("::").collect();
    (1..=segs.len())
        .rev()
        .find_map(|k| modules.get(&segs[..k].join("::")))
}

fn level(module: &str, depth: usize) -> String {
    module
        .split("::")
        .take(depth)
        .collect::<Vec<_>>()
        .join("::")
}

fn related(a: &str, b: &str) -> bool {
    a == b || b.starts_with(&format!("{a}::")) || a.starts_with(&format!("{b}::"))
}

/// Every import circle among `modules` (name → text), at every folder
/// depth: one line each, with the imports that make it.
fn circles(modules: &BTreeMap<String, String>) -> Vec<String> {
    let names: BTreeSet<String> = modules.keys().filter(|m| !m.is_empty()).cloned().collect();
    // module → (module it uses)
    let mut uses: BTreeMap<&str, BTreeSet<&String>> = BTreeMap::new();
    for (m, text) in modules {
        let mut deps: BTreeSet<&String> = crate_paths(text)
            .iter()
            .filter_map(|p| resolve(p, &names))
            .collect();
        let parent = m.rsplit_once("::").map_or("", |(p, _)| p);
        for s in text.split("super::").skip(1) {
            let seg: String = s
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let full = if parent.is_empty() {
                seg
            } else {
                format!("{parent}::{seg}")
            };
            if let Some(n) = names.get(&full) {
                deps.insert(n);
            }
        }
        uses.insert(m, deps);
    }
    let depth = names
        .iter()
        .map(|n| n.split("::").count())
        .max()
        .unwrap_or(0);
    let mut found = Vec::new();
    for d in 1..=depth {
        let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        for (m, deps) in &uses {
            let a = level(m, d);
            for dep in deps {
                let b = level(dep, d);
                if !a.is_empty() && !b.is_empty() && !related(&a, &b) {
                    let why = graph.entry(a.clone()).or_default().entry(b).or_default();
                    why.insert(format!("{m} uses {dep}"));
                }
            }
        }
        for c in cycles(&graph) {
            let why: Vec<String> = c
                .iter()
                .zip(c.iter().cycle().skip(1))
                .map(|(a, b)| format!("{a} -> {b} ({})", first(&graph[a][b])))
                .collect();
            found.push(format!("import circle at depth {d}: {}", why.join(", ")));
        }
    }
    found.sort();
    found.dedup();
    found
}

fn first(s: &BTreeSet<String>) -> &str {
    s.iter().next().map_or("", String::as_str)
}

/// One circle per strongly connected group of more than one node, as the
/// path that walks it.
fn cycles(graph: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for start in graph.keys() {
        if seen.contains(start) {
            continue;
        }
        // A shortest way back to `start`, breadth first.
        let mut prev: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut back = None;
        while let Some(n) = queue.pop_front() {
            for next in graph.get(n).into_iter().flat_map(|e| e.keys()) {
                if next == start {
                    back = Some(n);
                    break;
                }
                if !prev.contains_key(next) {
                    prev.insert(next, n);
                    queue.push_back(next);
                }
            }
            if back.is_some() {
                break;
            }
        }
        if let Some(mut n) = back {
            let mut path = vec![n.clone()];
            while n != start {
                n = prev[n];
                path.push(n.clone());
            }
            path.reverse();
            seen.extend(path.iter().cloned());
            out.push(path);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(m, t)| (m.to_string(), without_tests(t)))
            .collect()
    }

    #[test]
    fn items_are_found_where_they_are_defined_or_re_exported() {
        let text =
            "pub struct Lease {}\npub use inner::{client_id_key, hw_key};\npub(crate) fn keep() {}";
        assert!(defines(text, "Lease"));
        assert!(defines(text, "hw_key"));
        assert!(defines(text, "keep"));
        assert!(!defines(text, "LeaseState"));
        assert!(!defines(text, "Hidden"));
        assert!(!defines(text, "hw"));
    }

    #[test]
    fn use_trees_expand_to_every_path() {
        let mut p = crate_paths("use crate::{a::{b, c::d}, e, self::f::g};\nx = crate::h::i();");
        p.sort();
        assert_eq!(p, ["a::b", "a::c::d", "e", "f::g", "h::i"]);
    }

    #[test]
    fn a_circle_between_folders_is_found_with_its_imports() {
        let m = modules(&[
            ("", "pub mod a; pub mod b;"),
            ("a", "pub mod x;"),
            ("a::x", "use crate::b::y::Thing;"),
            ("b", "pub mod y;"),
            ("b::y", "use crate::{a::x::Other};"),
        ]);
        let c = circles(&m);
        assert!(
            c.iter()
                .any(|l| l.contains("depth 1") && l.contains("a::x uses b::y")),
            "{c:?}"
        );
    }

    #[test]
    fn a_child_using_its_parent_comments_and_tests_are_not_circles() {
        let m = modules(&[
            ("", "pub mod a; pub mod b;"),
            ("a", "pub mod x; use crate::a::x::T;"),
            (
                "a::x",
                "use super::U; // crate::b::y\nlet s = \"crate::b::y\";",
            ),
            ("b", "pub mod y;"),
            (
                "b::y",
                "use crate::a::x::T;\n#[cfg(test)]\nmod tests {\n use crate::b::y; }",
            ),
        ]);
        assert_eq!(circles(&m), Vec::<String>::new());
    }
}
