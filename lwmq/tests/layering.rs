//! The crate's layering, checked on its source: no import circle between modules, no
//! transport reaching up into the socket or the context, and no transport named in
//! `socket.rs`.
//!
//! A module is a file of `lwmq/src`. Module A depends on module B when A's code (its
//! tests left out) names a path into B (`crate::b::...`, `super::b::...`, or an item of
//! B through `use crate::{b, ...}`). A module and its ancestors or descendants do not
//! count as a circle (a parent declares its children; a child may use its parent's
//! items): a circle is between modules neither of which contains the other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn modules(root: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    let mut out = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(root).expect("under src").with_extension("");
        let mut m: Module = rel
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        if matches!(m.last().map(String::as_str), Some("mod" | "lib")) {
            m.pop();
        }
        out.insert(m, f);
    }
    out
}

/// The code of a file without comments and without its test modules (a `mod` under a
/// `#[cfg(...)]` that names `test`, e.g. `#[cfg(test)] mod tests`, `#[cfg(all(test,
/// loom))] mod loom_tests`; they come last in a file).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read module");
    let lines: Vec<&str> = text.lines().collect();
    let end = (1..lines.len())
        .find(|&i| {
            let attr = lines[i - 1].trim_start();
            let l = lines[i].trim_start();
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            l.starts_with("mod ") && attr.starts_with("#[cfg(") && attr.contains("test")
        })
        .map_or(lines.len(), |i| i - 1);
    lines[..end]
        .iter()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b` or `super::a` path in `code`, as segments.
fn paths(code: &str) -> Vec<(bool, Vec<String>)> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for kw in ["crate", "super"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(kw) {
            let start = from + i;
            from = start + kw.len();
            let before_ok = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            if !before_ok || !code[from..].starts_with("::") {
                continue;
            }
            let rest = &code[from..];
            if rest.starts_with("::{") {
                // `use crate::{a, b::c, d::{e, f}}`: the first segment of each item.
                let end = rest.find("};").unwrap_or(rest.len());
                let mut depth = 0;
                let mut item = String::new();
                for c in rest[3..end].chars() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            out.push((kw == "super", segments(&item)));
                            item.clear();
                        }
                        _ if depth == 0 => item.push(c),
                        _ => {}
                    }
                }
                out.push((kw == "super", segments(&item)));
            } else {
                out.push((kw == "super", segments(&rest[2..])));
            }
        }
    }
    out
}

fn segments(s: &str) -> Vec<String> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    s[..end]
        .split("::")
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The module a path lands in: the longest prefix that is a module.
fn resolve(mods: &BTreeMap<Module, PathBuf>, path: &[String]) -> Option<Module> {
    (0..=path.len())
        .rev()
        .map(|i| path[..i].to_vec())
        .find(|p| mods.contains_key(p))
}

fn is_family(a: &Module, b: &Module) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&root);
    let mut g = BTreeMap::new();
    for (m, file) in &mods {
        let is_mod_rs = file
            .file_name()
            .is_some_and(|f| f == "mod.rs" || f == "lib.rs");
        let mut deps = BTreeSet::new();
        for (sup, p) in paths(&code(file)) {
            let mut full: Vec<String> = if sup {
                // `super` of a.rs is its parent; of a/mod.rs, a's parent.
                let parent = if is_mod_rs {
                    m.len().saturating_sub(1)
                } else {
                    m.len() - 1
                };
                m[..parent].to_vec()
            } else {
                Vec::new()
            };
            let mut p = p.as_slice();
            while p.first().is_some_and(|s| s == "super") {
                full.pop();
                p = &p[1..];
            }
            full.extend_from_slice(p);
            if let Some(t) = resolve(&mods, &full) {
                if !is_family(&t, m) {
                    deps.insert(t);
                }
            }
        }
        g.insert(m.clone(), deps);
    }
    g
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("::")
    }
}

#[test]
fn no_import_circle_in_the_crate() {
    let g = graph();
    assert!(g.len() > 30, "found the modules ({})", g.len());
    // Depth-first search for a back edge; report the circle it closes.
    fn visit(
        m: &Module,
        g: &BTreeMap<Module, BTreeSet<Module>>,
        stack: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
        circles: &mut Vec<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut c: Vec<String> = stack[i..].iter().map(name).collect();
            c.push(name(m));
            circles.push(c.join(" -> "));
            return;
        }
        stack.push(m.clone());
        for d in g.get(m).into_iter().flatten() {
            visit(d, g, stack, done, circles);
        }
        stack.pop();
        done.insert(m.clone());
    }
    let mut circles = Vec::new();
    let mut done = BTreeSet::new();
    for m in g.keys() {
        visit(m, &g, &mut Vec::new(), &mut done, &mut circles);
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn transports_do_not_reach_up_into_the_socket_or_the_context() {
    let g = graph();
    let up: BTreeSet<Module> = [vec!["socket".to_owned()], vec!["context".to_owned()]].into();
    let mut bad = Vec::new();
    for (m, deps) in &g {
        if m.first().is_some_and(|s| s == "transport") {
            for d in deps.intersection(&up) {
                bad.push(format!("{} -> {}", name(m), name(d)));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
    // The check sees real dependencies: the socket does depend on the transports.
    assert!(g[&vec!["socket".to_owned()]].contains(&vec!["transport".to_owned()]));
}

/// (Option types such as `shm::AllowedPeers` are part of the socket's API and may be
/// named; what may not is a branch per transport.)
#[test]
fn the_socket_names_no_transport() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let socket = code(&root.join("socket.rs"));
    for word in [
        "Endpoint::Tcp",
        "Endpoint::Unix",
        "Endpoint::Ipc",
        "Endpoint::Inproc",
        "Endpoint::Fd",
        "Endpoint::Systemd",
        "transport::ipc",
        "transport::inproc",
        "transport::tcp",
        "transport::stream",
        "reactor",
    ] {
        assert!(!socket.contains(word), "socket.rs names {word}");
    }
}
