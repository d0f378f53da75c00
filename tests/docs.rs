//! The documentation holds together: in `README.md`, `ARCHITECTURE.md`, `CHANGELOG.md` and every `docs/*.md`,
//! every relative link (text or image) names a file that exists, every `#anchor` (in the same file or in another
//! Markdown file) names one of its headings, and every `scripts/`, `config/`, `fixtures/`, `cards/` or `deploy/`
//! path written as code (inline or in a block) exists. And the README stays a front door: under 16 KB, with the
//! rest in `docs/` (issue 24).
//!
//! Headings become anchors as GitHub makes them: lowercase; letters, digits, `-` and `_` kept, spaces turned into
//! `-`, everything else dropped; a repeated heading gets `-1`, `-2`… Web links (`https:`, `mailto:`) are not
//! fetched. A path stops at the first character that cannot be in one (`*`, `<`, a space), so `cards/cards/<card>.toml`
//! checks `cards/cards/` and `fixtures/tools/*.py` checks `fixtures/tools/`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What the README may weigh: "at most about 15 KB" of front door, with a little room.
const README_MAX_BYTES: usize = 16 * 1024;

/// The folders whose paths, written as code, must exist.
const CHECKED_FOLDERS: [&str; 5] = ["scripts/", "config/", "fixtures/", "cards/", "deploy/"];

/// The Markdown files checked, relative to the repository's root.
fn documents() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "CHANGELOG.md"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .map(|path| path.strip_prefix(ROOT).unwrap().to_path_buf())
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// Pieces of text, each with the number of the line it starts on.
type Numbered = Vec<(usize, String)>;

/// One Markdown file, split: prose (outside code), code (code blocks and inline code), and its headings' anchors.
struct Markdown {
    /// Each line of prose with its number, code spans blanked out.
    prose: Numbered,
    /// Each piece of code with the number of the line it starts on.
    code: Numbered,
    anchors: Vec<String>,
}

fn parse(text: &str) -> Markdown {
    let mut outside = Vec::new(); // (line number, text) outside fenced blocks
    let mut code = Vec::new();
    let mut headings = Vec::new();
    let mut fence: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let trimmed = line.trim_start();
        match fence {
            Some(marker) => {
                if trimmed.starts_with(marker) {
                    fence = None;
                } else {
                    code.push((number, line.to_string()));
                }
            }
            None if trimmed.starts_with("```") || trimmed.starts_with("~~~") => fence = Some(&trimmed[..3]),
            None => {
                let hashes = line.chars().take_while(|&c| c == '#').count();
                if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
                    headings.push(line[hashes..].trim().trim_end_matches('#').trim().to_string());
                }
                outside.push((number, line.to_string()));
            }
        }
    }
    let (prose, spans) = split_code_spans(&outside);
    code.extend(spans);
    Markdown {
        prose,
        code,
        anchors: anchors(&headings),
    }
}

/// Splits lines (outside code blocks) into prose and code spans. A run of n backticks opens a span that the next
/// run of exactly n closes, on the same line or a later one (CommonMark); an unclosed run is text.
fn split_code_spans(lines: &[(usize, String)]) -> (Numbered, Numbered) {
    // The text as one string, with the line each byte comes from.
    let mut text = String::new();
    let mut line_of = Vec::new();
    for (number, line) in lines {
        text.push_str(line);
        text.push('\n');
        line_of.extend(std::iter::repeat_n(*number, line.len() + 1));
    }
    let bytes = text.as_bytes();
    let mut prose = text.clone().into_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let run = bytes[i..].iter().take_while(|&&b| b == b'`').count();
        let mut j = i + run;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let other = bytes[j..].iter().take_while(|&&b| b == b'`').count();
                if other == run {
                    close = Some(j);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                spans.push((line_of[i], text[i + run..end].to_string()));
                for b in &mut prose[i..end + run] {
                    if *b != b'\n' {
                        *b = b' ';
                    }
                }
                i = end + run;
            }
            None => i += run,
        }
    }
    let prose = String::from_utf8(prose).unwrap();
    let prose = lines
        .iter()
        .map(|(n, _)| *n)
        .zip(prose.lines().map(str::to_string))
        .collect();
    (prose, spans)
}

/// GitHub's anchor for a heading.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(headings: &[String]) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    headings
        .iter()
        .map(|heading| {
            let base = slug(heading);
            let count = seen.entry(base.clone()).or_default();
            let anchor = if *count == 0 {
                base.clone()
            } else {
                format!("{base}-{count}")
            };
            *count += 1;
            anchor
        })
        .collect()
}

/// Every link target in a line of prose: `[text](target)` and `![alt](target)`, without a title.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        // Up to the closing parenthesis, allowing balanced ones inside.
        let mut depth = 0usize;
        let mut end = after.len();
        for (k, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = k;
                    break;
                }
                ')' => depth -= 1,
                _ => {}
            }
        }
        let target = after[..end].split_whitespace().next().unwrap_or_default();
        targets.push(target.trim_matches(|c| c == '<' || c == '>').to_string());
        rest = &after[end.min(after.len())..];
    }
    targets
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                assert!(out.pop(), "{} climbs out of the repository", path.display());
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The paths under the checked folders that a piece of code names.
fn checked_paths(code: &str) -> Vec<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_.-/".contains(c);
    let mut paths = Vec::new();
    for (start, _) in code.char_indices() {
        let tail = &code[start..];
        if !CHECKED_FOLDERS.iter().any(|folder| tail.starts_with(folder)) {
            continue;
        }
        // Only at the start of a path: not `src/config/…`, `$PWD/config/…` or `/etc/…/config/…`.
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| is_path_char(c) || c == '$' || c == '~') {
            continue;
        }
        let path: String = tail.chars().take_while(|&c| is_path_char(c)).collect();
        paths.push(path.trim_end_matches(['.', ',', ':', ';']).to_string());
    }
    paths
}

fn is_web(target: &str) -> bool {
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| target.starts_with(scheme))
}

/// Every problem found in the checked documents, one line each.
fn problems() -> Vec<String> {
    let root = Path::new(ROOT);
    let mut cache: BTreeMap<PathBuf, Markdown> = BTreeMap::new();
    let mut read = |path: &Path| -> Option<Vec<String>> {
        if !cache.contains_key(path) {
            let text = std::fs::read_to_string(root.join(path)).ok()?;
            cache.insert(path.to_path_buf(), parse(&text));
        }
        Some(cache[path].anchors.clone())
    };
    let mut problems = Vec::new();
    for document in documents() {
        let text = std::fs::read_to_string(root.join(&document)).unwrap();
        let markdown = parse(&text);
        let folder = document.parent().unwrap_or(Path::new("")).to_path_buf();
        for (number, line) in &markdown.prose {
            for target in link_targets(line) {
                if target.is_empty() || is_web(&target) {
                    continue;
                }
                let here = format!("{}:{number}", document.display());
                let (file, anchor) = match target.split_once('#') {
                    Some((file, anchor)) => (file, Some(anchor)),
                    None => (target.as_str(), None),
                };
                let linked = if file.is_empty() {
                    document.clone()
                } else {
                    normalise(&folder.join(file))
                };
                if !root.join(&linked).exists() {
                    problems.push(format!(
                        "{here}: the link `{target}` names {}, which does not exist",
                        linked.display()
                    ));
                    continue;
                }
                let Some(anchor) = anchor else { continue };
                if linked.extension().is_none_or(|e| e != "md") {
                    continue;
                }
                let anchors = read(&linked).unwrap_or_default();
                if !anchors.iter().any(|a| a == anchor) {
                    problems.push(format!(
                        "{here}: the link `{target}`: {} has no heading whose anchor is `#{anchor}` (it has: {})",
                        linked.display(),
                        anchors.join(", ")
                    ));
                }
            }
        }
        for (number, code) in &markdown.code {
            for path in checked_paths(code) {
                if !root.join(&path).exists() {
                    problems.push(format!(
                        "{}:{number}: `{path}` is named as a path but does not exist",
                        document.display()
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn every_link_anchor_and_named_path_in_the_docs_exists() {
    let problems = problems();
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_readme_is_a_front_door() {
    let size = std::fs::metadata(Path::new(ROOT).join("README.md")).unwrap().len() as usize;
    assert!(
        size < README_MAX_BYTES,
        "README.md is {size} bytes, over {README_MAX_BYTES}: move the detail into docs/ and link it from \"Read on\""
    );
}

#[test]
fn the_checks_see_what_they_check() {
    // GitHub's anchors.
    assert_eq!(
        slug("Invariants: limits, time-outs, load shedding"),
        "invariants-limits-time-outs-load-shedding"
    );
    assert_eq!(slug("Missing data: 412 or a card"), "missing-data-412-or-a-card");
    assert_eq!(slug("`../shared`"), "shared");
    assert_eq!(slug("JSON log fields"), "json-log-fields");
    assert_eq!(anchors(&["A".into(), "A".into(), "A".into()]), ["a", "a-1", "a-2"]);
    // Links, code spans across lines, and paths.
    let parsed =
        parse("# T\n\nSee [x](a.md#b) and ![i](p.png \"t\").\n``one `two`\nthree``\n```sh\nscripts/fuzz 300\n```\n");
    let links: Vec<String> = parsed.prose.iter().flat_map(|(_, l)| link_targets(l)).collect();
    assert_eq!(links, ["a.md#b", "p.png"]);
    assert_eq!(parsed.code[0].1, "scripts/fuzz 300");
    assert_eq!(parsed.code[1].1, "one `two`\nthree");
    assert_eq!(parsed.anchors, ["t"]);
    assert_eq!(
        checked_paths("cards/cards/<card>.toml, src/config/x, $PWD/config/y, fixtures/tools/*.py, config/a.toml."),
        ["cards/cards/", "fixtures/tools/", "config/a.toml"]
    );
    // Every document is read, and the README is among them.
    let documents = documents();
    assert!(documents.iter().any(|d| d == Path::new("README.md")));
    assert!(documents.iter().any(|d| d == Path::new("docs/README.md")));
}
