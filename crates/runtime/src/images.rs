//! How a Deployment's container image becomes a local command.
//!
//! A file named `meshbox.images` beside the manifests (or given with `--images`)
//! maps each image to either a workload built into meshbox or a command:
//!
//! ```yaml
//! images:
//!   "artashesavetisyan/istio-basics-course:service-a-v4": { app: service-a }
//!   "example.com/shop:1.2": { command: ["python3", "shop.py"], workingDir: ./shop }
//! ```
//!
//! The name keeps `kubectl apply -f DIR` from reading it as a manifest. Images of the
//! form `meshbox/APP[:tag]` need no entry. A container that names no mapped image but
//! has `command` runs that command as given.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The mapping file's name beside manifests.
pub const IMAGES_FILE: &str = "meshbox.images";

/// One image's local form.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageEntry {
    /// A workload built into meshbox (`meshbox app NAME`).
    #[serde(default)]
    pub app: Option<String>,
    /// A command line to run instead.
    #[serde(default)]
    pub command: Vec<String>,
    /// Working directory for `command`, relative to the mapping file.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImagesFile {
    #[serde(default)]
    images: BTreeMap<String, ImageEntry>,
}

/// All known image mappings.
#[derive(Debug, Clone, Default)]
pub struct ImageMap {
    entries: BTreeMap<String, ImageEntry>,
}

/// What to run for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalCommand {
    /// A built-in workload.
    App(String),
    /// A program with arguments, in a directory.
    Command {
        /// Program and arguments: the mapped or the container's `command`, then the
        /// container's `args`.
        argv: Vec<String>,
        /// Directory to run in (a mapping's `workingDir`, relative to its file); `None`:
        /// meshbox's own.
        working_dir: Option<PathBuf>,
    },
}

impl ImageMap {
    /// Adds the mappings of one file (later files override earlier ones).
    pub fn load_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        self.load_text(path, &text)
    }

    /// Adds the mappings of one file's text; `path` names it and anchors `workingDir`.
    pub fn load_text(&mut self, path: &Path, text: &str) -> Result<(), String> {
        let file: ImagesFile =
            serde_norway::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for (image, mut entry) in file.images {
            if entry.app.is_some() != entry.command.is_empty() {
                return Err(format!(
                    "{}: image {image:?}: give exactly one of `app` or `command`",
                    path.display()
                ));
            }
            if let Some(app) = &entry.app {
                if !meshbox_apps_names().contains(&app.as_str()) {
                    return Err(format!(
                        "{}: image {image:?}: unknown app {app:?}; built-in apps are {}",
                        path.display(),
                        meshbox_apps_names().join(", ")
                    ));
                }
            }
            entry.working_dir = entry.working_dir.map(|d| base.join(d));
            self.entries.insert(image, entry);
        }
        Ok(())
    }

    /// Loads `meshbox.images` from each directory given (or the directory of each
    /// file), when present.
    pub fn load_beside(&mut self, paths: &[PathBuf]) -> Result<(), String> {
        for candidate in files_beside(paths) {
            self.load_file(&candidate)?;
        }
        Ok(())
    }

    /// The local command for a container, or why there is none.
    pub fn resolve(
        &self,
        image: Option<&str>,
        command: &[String],
        args: &[String],
    ) -> Result<LocalCommand, String> {
        if let Some(image) = image {
            if let Some(entry) = self.entries.get(image) {
                return Ok(match &entry.app {
                    Some(app) => LocalCommand::App(app.clone()),
                    None => LocalCommand::Command {
                        argv: entry.command.iter().chain(args.iter()).cloned().collect(),
                        working_dir: entry.working_dir.clone(),
                    },
                });
            }
            let bare = image.split(':').next().unwrap_or(image);
            if let Some(app) = bare.strip_prefix("meshbox/") {
                if meshbox_apps_names().contains(&app) {
                    return Ok(LocalCommand::App(app.to_string()));
                }
            }
        }
        if !command.is_empty() {
            return Ok(LocalCommand::Command {
                argv: command.iter().chain(args.iter()).cloned().collect(),
                working_dir: None,
            });
        }
        Err(format!(
            "no local command for image {:?}: map it in a {IMAGES_FILE} file beside the manifests (see README), or use an image meshbox/APP",
            image.unwrap_or("")
        ))
    }
}

/// The `meshbox.images` files beside manifest paths (each directory once).
pub fn files_beside(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        let dir = if p.is_dir() {
            p.clone()
        } else {
            p.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(IMAGES_FILE);
        if candidate.is_file() && !out.contains(&candidate) {
            out.push(candidate);
        }
    }
    out
}

/// The built-in apps (kept here to avoid a dependency on the apps crate).
pub fn meshbox_apps_names() -> &'static [&'static str] {
    &[
        "service-a",
        "service-b",
        "service-c",
        "worldtime",
        "echo",
        "static-1k",
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn course_mapping_resolves_and_unknown_images_are_named() {
        let dir = std::env::temp_dir().join(format!("meshbox-images-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(IMAGES_FILE);
        std::fs::write(&file, "images:\n  \"course/x:service-b\": { app: service-b }\n  \"py:1\": { command: [python3, s.py] }\n").unwrap();
        let mut map = ImageMap::default();
        map.load_file(&file).unwrap();
        assert_eq!(
            map.resolve(Some("course/x:service-b"), &[], &[]).unwrap(),
            LocalCommand::App("service-b".into())
        );
        assert!(
            matches!(map.resolve(Some("py:1"), &[], &["--x".into()]).unwrap(), LocalCommand::Command { argv, .. } if argv == ["python3", "s.py", "--x"])
        );
        assert_eq!(
            map.resolve(Some("meshbox/worldtime:latest"), &[], &[])
                .unwrap(),
            LocalCommand::App("worldtime".into())
        );
        assert_eq!(
            map.resolve(Some("meshbox/echo"), &[], &[]).unwrap(),
            LocalCommand::App("echo".into())
        );
        let e = map.resolve(Some("nope:1"), &[], &[]).unwrap_err();
        assert!(e.contains("nope:1") && e.contains(IMAGES_FILE), "{e}");
        std::fs::write(&file, "images:\n  a: { app: nope }\n").unwrap();
        assert!(ImageMap::default()
            .load_file(&file)
            .unwrap_err()
            .contains("unknown app"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
