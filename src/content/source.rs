//! Where the content's files come from: `cards/` as embedded at build time, or a directory named at start.
//!
//! Why one map of texts: the checks then see the same thing whichever the source, and name each file by its
//! path under the content's root, as its author would open it. Only the file kinds content is made of
//! (`.toml`, `.json`, `.csv`) are read from a directory; notes and tools beside them are left alone.

use std::collections::BTreeMap;
use std::path::Path;

use include_dir::{Dir, include_dir};

use super::KnowledgeError;

static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/cards");

/// The kinds of file content is made of; the rest (notes, tools) is left alone.
pub(super) fn is_content_file(path: &str) -> bool {
    [".toml", ".json", ".csv"].iter().any(|ext| path.ends_with(ext))
}

pub(super) fn embedded_files() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    fn walk(dir: &Dir<'static>, files: &mut BTreeMap<String, String>) {
        for file in dir.files() {
            if let (Some(path), Some(text)) = (file.path().to_str(), file.contents_utf8()) {
                files.insert(path.replace('\\', "/"), text.to_string());
            }
        }
        for sub in dir.dirs() {
            walk(sub, files);
        }
    }
    walk(&EMBEDDED, &mut files);
    files
}

pub(super) fn directory_files(root: &Path) -> Result<BTreeMap<String, String>, KnowledgeError> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let io = |source| KnowledgeError::Io {
            file: dir.display().to_string(),
            source,
        };
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            if !is_content_file(&relative) {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| KnowledgeError::Io {
                file: path.display().to_string(),
                source,
            })?;
            files.insert(relative, text);
        }
    }
    Ok(files)
}
