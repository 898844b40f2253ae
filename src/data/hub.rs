//! Hugging Face Hub datasets as inputs: `hf:ORG/NAME[:CONFIG][:SPLIT]`, e.g.
//! `hf:openai/gsm8k:main:test`, `hf:HuggingFaceH4/MATH-500:test` or
//! `hf:open-r1/OpenR1-Math-220k:default:train`.
//!
//! A spec resolves to the data files of one split, in the standard cache that `hf-hub` and
//! Python's `huggingface_hub` share (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`:
//! `datasets--ORG--NAME/refs/main`, `snapshots/<commit>/…` links into `blobs/`). A snapshot already
//! there is used without the network; otherwise the files are downloaded into it, unless
//! `HF_HUB_OFFLINE=1`. A token (`HF_TOKEN`, else the cache's token file) is sent to the Hub for
//! gated datasets and never printed.
//!
//! Which files make the split: the dataset card's YAML `configs` (`data_files` per split, with
//! globs) when the card has them, else the Hub's own inference: Parquet/JSONL files, the config as
//! the first folder, and the split from the file or folder name (`train`, `test`, `validation` and
//! their usual synonyms; `train` when none).

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use super::card::{read_license, CARD_FILE};
use super::errors::{DataError, Result};
use super::sources::file_extension;

/// The prefix of a Hub dataset spec.
pub const HUB_PREFIX: &str = "hf:";

/// A parsed `hf:ORG/NAME[:CONFIG][:SPLIT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubDatasetSpec {
    /// `ORG/NAME`.
    pub repo: String,
    /// The config (`main`), or `None` for the default one.
    pub config: Option<String>,
    /// The split (`test`), or `None` for the only one.
    pub split: Option<String>,
}

impl HubDatasetSpec {
    /// Parses a spec; `None` when `text` does not start with `hf:`. With one part after the
    /// name it is the config when the dataset has one of that name, else the split.
    pub fn parse(text: &str) -> Option<Result<Self>> {
        let rest = text.strip_prefix(HUB_PREFIX)?;
        let bad = |message: &str| {
            DataError::InvalidConfig(format!(
                "dataset {text:?}: {message} (expected hf:ORG/NAME[:CONFIG][:SPLIT], e.g. \
                 hf:openai/gsm8k:main:test)"
            ))
        };
        let mut parts = rest.split(':');
        let repo = parts.next().unwrap_or_default().to_string();
        let valid_name = |part: &str| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if repo.split('/').count() != 2 || !repo.split('/').all(valid_name) {
            return Some(Err(bad("the dataset id must be ORG/NAME")));
        }
        let optional = |part: Option<&str>| part.filter(|p| !p.is_empty()).map(str::to_string);
        let (config, split) = (optional(parts.next()), optional(parts.next()));
        if parts.next().is_some() {
            return Some(Err(bad("too many `:` parts")));
        }
        Some(Ok(HubDatasetSpec {
            repo,
            config,
            split,
        }))
    }

    /// The dataset's name without its organisation (`gsm8k`).
    pub fn name(&self) -> &str {
        self.repo.rsplit('/').next().unwrap_or(&self.repo)
    }
}

/// The files of one split of a Hub dataset, in the local cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubDataset {
    /// The spec it came from.
    pub spec: HubDatasetSpec,
    /// The config used (`default` when the dataset has none).
    pub config: String,
    /// The split used.
    pub split: String,
    /// The snapshot directory in the cache.
    pub snapshot: PathBuf,
    /// The split's data files, sorted by path.
    pub files: Vec<PathBuf>,
    /// The card's `license`, when it has one.
    pub license: Option<String>,
}

/// One config of a dataset: its name, whether it is marked default, and its splits' globs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConfigFiles {
    name: String,
    default: bool,
    splits: Vec<(String, Vec<String>)>,
}

/// Resolves `spec` in the cache, downloading the split's files unless offline.
pub fn resolve(spec: &HubDatasetSpec) -> Result<HubDataset> {
    let cache = hf_hub::Cache::from_env();
    let repo = hf_hub::Repo::new(spec.repo.clone(), hf_hub::RepoType::Dataset);
    let repo_dir = cache.path().join(repo.folder_name());
    let cached = cached_snapshot(&repo_dir).map(|snapshot| {
        let files = list_files(&snapshot);
        select(spec, &snapshot, &files)
    });
    match cached {
        Some(Ok(found)) => Ok(found),
        // Offline, what the cached snapshot lacks is the answer (a config or split to name).
        Some(Err(error)) if offline() => Err(error),
        None if offline() => Err(DataError::InvalidConfig(format!(
            "dataset {}: not in the Hugging Face cache at {} and HF_HUB_OFFLINE is set \
             (download it once online, or copy the cache here)",
            spec.repo,
            cache.path().display()
        ))),
        // Online, a partial snapshot is completed from the Hub.
        _ => download(spec),
    }
}

/// Whether `HF_HUB_OFFLINE` forbids the network.
fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"))
}

/// The snapshot `refs/main` points to, when it exists.
fn cached_snapshot(repo_dir: &Path) -> Option<PathBuf> {
    let commit = std::fs::read_to_string(repo_dir.join("refs").join("main")).ok()?;
    let snapshot = repo_dir.join("snapshots").join(commit.trim());
    snapshot.is_dir().then_some(snapshot)
}

/// Every file under `snapshot` as a `/`-separated relative path (links into `blobs/` followed).
fn list_files(snapshot: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if path.is_dir() {
                walk(&path, &format!("{prefix}{name}/"), out);
            } else if path.is_file() {
                out.push(format!("{prefix}{name}"));
            }
        }
    }
    let mut files = Vec::new();
    walk(snapshot, "", &mut files);
    files.sort();
    files
}

/// Picks the split's files among `files` (relative to `snapshot`, all present there).
fn select(spec: &HubDatasetSpec, snapshot: &Path, files: &[String]) -> Result<HubDataset> {
    let configs = read_card_configs(&snapshot.join(CARD_FILE))?;
    let (config, split, chosen) = choose(spec, configs, files)?;
    Ok(HubDataset {
        spec: spec.clone(),
        config,
        split,
        snapshot: snapshot.to_path_buf(),
        files: chosen.iter().map(|f| snapshot.join(f)).collect(),
        license: read_license(snapshot),
    })
}

/// Downloads the card and the split's files with `hf-hub` into the cache.
fn download(spec: &HubDatasetSpec) -> Result<HubDataset> {
    let hub_error = |what: &str, e: hf_hub::api::sync::ApiError| {
        DataError::InvalidConfig(format!("dataset {}: {what}: {e}", spec.repo))
    };
    let mut builder = hf_hub::api::sync::ApiBuilder::from_env();
    // `HF_TOKEN` wins over the cache's token file, as in `huggingface_hub`; it is only ever sent
    // to the Hub, never printed.
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        builder = builder.with_token(Some(token));
    }
    let api = builder
        .build()
        .map_err(|e| hub_error("the Hub client", e))?;
    let repo = api.dataset(spec.repo.clone());
    let info = repo.info().map_err(|e| hub_error("listing its files", e))?;
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let card = if files.iter().any(|f| f == CARD_FILE) {
        Some(repo.get(CARD_FILE).map_err(|e| hub_error(CARD_FILE, e))?)
    } else {
        None
    };
    let configs = match &card {
        Some(path) => read_card_configs(path)?,
        None => Vec::new(),
    };
    let (_, _, chosen) = choose(spec, configs, &files)?;
    let mut snapshot = None;
    for file in &chosen {
        let local = repo.get(file).map_err(|e| hub_error(file, e))?;
        let depth = file.matches('/').count() + 1;
        snapshot = local.ancestors().nth(depth).map(Path::to_path_buf);
    }
    let snapshot = snapshot
        .ok_or_else(|| DataError::InvalidConfig(format!("dataset {}: no data files", spec.repo)))?;
    select(spec, &snapshot, &list_files(&snapshot))
}

/// The `configs` of a dataset card, empty when there is no card or it has none.
fn read_card_configs(card: &Path) -> Result<Vec<ConfigFiles>> {
    let Ok(text) = std::fs::read_to_string(card) else {
        return Ok(Vec::new());
    };
    let Some(front) = text
        .strip_prefix("---")
        .and_then(|rest| rest.split("\n---").next())
    else {
        return Ok(Vec::new());
    };
    let bad = |message: String| DataError::InvalidValue {
        path: card.to_path_buf(),
        location: super::errors::Location::Line(1),
        field: "configs".into(),
        message,
    };
    let docs = YamlLoader::load_from_str(front).map_err(|e| bad(format!("bad YAML: {e}")))?;
    let Some(configs) = docs.first().and_then(|doc| doc["configs"].as_vec()) else {
        return Ok(Vec::new());
    };
    let strings = |value: &Yaml| -> Vec<String> {
        match value {
            Yaml::String(one) => vec![one.clone()],
            Yaml::Array(many) => many
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    };
    configs
        .iter()
        .map(|config| {
            let name = config["config_name"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let data_files = &config["data_files"];
            let splits = match data_files.as_vec() {
                Some(entries) if entries.iter().all(|e| e["split"].as_str().is_some()) => entries
                    .iter()
                    .map(|e| {
                        (
                            e["split"].as_str().unwrap_or("train").to_string(),
                            strings(&e["path"]),
                        )
                    })
                    .collect(),
                _ => vec![("train".to_string(), strings(data_files))],
            };
            if splits.iter().any(|(_, globs)| globs.is_empty()) {
                return Err(bad(format!(
                    "config `{name}` has a split without data files"
                )));
            }
            Ok(ConfigFiles {
                default: config["default"].as_bool().unwrap_or(false),
                name,
                splits,
            })
        })
        .collect()
}

/// The config name, split name and files of `spec` among `files`.
fn choose(
    spec: &HubDatasetSpec,
    configs: Vec<ConfigFiles>,
    files: &[String],
) -> Result<(String, String, Vec<String>)> {
    let data_files: Vec<&String> = files
        .iter()
        .filter(|f| {
            matches!(
                file_extension(Path::new(f)).as_str(),
                "parquet" | "jsonl" | "json"
            )
        })
        .collect();
    let configs = if configs.is_empty() {
        inferred_configs(&data_files)
    } else {
        configs
    };
    let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
    let fail =
        |message: String| DataError::InvalidConfig(format!("dataset {}: {message}", spec.repo));
    // One optional part: a config when one has that name, else a split.
    let (config_name, split_name) = match (&spec.config, &spec.split) {
        (Some(one), None) if !names.contains(&one.as_str()) => (None, Some(one.clone())),
        (config, split) => (config.clone(), split.clone()),
    };
    let config = match &config_name {
        Some(name) => configs
            .iter()
            .find(|c| &c.name == name)
            .ok_or_else(|| fail(format!("no config `{name}`; it has {}", names.join(", "))))?,
        None => configs
            .iter()
            .find(|c| c.default)
            .or_else(|| configs.iter().find(|c| c.name == "default"))
            .or_else(|| (configs.len() == 1).then(|| &configs[0]))
            .ok_or_else(|| {
                fail(format!(
                    "name a config: it has {} (hf:{}:CONFIG[:SPLIT])",
                    names.join(", "),
                    spec.repo
                ))
            })?,
    };
    let split_names: Vec<&str> = config.splits.iter().map(|(s, _)| s.as_str()).collect();
    let (split, globs) = match &split_name {
        Some(name) => config
            .splits
            .iter()
            .find(|(s, _)| s == name)
            .ok_or_else(|| {
                fail(format!(
                    "config `{}` has no split `{name}`; it has {}",
                    config.name,
                    split_names.join(", ")
                ))
            })?,
        None if config.splits.len() == 1 => &config.splits[0],
        None => {
            return Err(fail(format!(
                "name a split: config `{}` has {} (hf:{}:{}:SPLIT)",
                config.name,
                split_names.join(", "),
                spec.repo,
                config.name
            )))
        }
    };
    let chosen: Vec<String> = files
        .iter()
        .filter(|f| globs.iter().any(|g| glob_match(g, f)))
        .filter(|f| {
            matches!(
                file_extension(Path::new(f)).as_str(),
                "parquet" | "jsonl" | "json"
            )
        })
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err(fail(format!(
            "config `{}` split `{split}`: no Parquet or JSONL file matches {}",
            config.name,
            globs.join(", ")
        )));
    }
    Ok((config.name.clone(), split.clone(), chosen))
}

/// The Hub's inference without a card: the first folder is the config when every file sits in
/// one (other than `data`), the split comes from the file or folder names.
fn inferred_configs(files: &[&String]) -> Vec<ConfigFiles> {
    let mut configs: Vec<ConfigFiles> = Vec::new();
    for file in files {
        let (config, rest) = match file.split_once('/') {
            Some((folder, rest)) if folder != "data" => (folder.to_string(), rest),
            _ => ("default".to_string(), file.as_str()),
        };
        let split = split_of(rest);
        let entry = match configs.iter_mut().find(|c| c.name == config) {
            Some(entry) => entry,
            None => {
                configs.push(ConfigFiles {
                    name: config.clone(),
                    default: false,
                    splits: Vec::new(),
                });
                configs.last_mut().expect("just pushed")
            }
        };
        match entry.splits.iter_mut().find(|(s, _)| *s == split) {
            Some((_, globs)) => globs.push(file.to_string()),
            None => entry.splits.push((split, vec![file.to_string()])),
        }
    }
    configs
}

/// The split a data file's path names (`test-00000-of-00001.parquet` → `test`), `train` when none.
fn split_of(path: &str) -> String {
    const SYNONYMS: [(&str, &str); 10] = [
        ("train", "train"),
        ("training", "train"),
        ("test", "test"),
        ("testing", "test"),
        ("eval", "test"),
        ("evaluation", "test"),
        ("validation", "validation"),
        ("valid", "validation"),
        ("val", "validation"),
        ("dev", "validation"),
    ];
    path.split(['/', '-', '_', '.', ' '])
        .find_map(|word| {
            SYNONYMS
                .iter()
                .find(|(name, _)| word.eq_ignore_ascii_case(name))
                .map(|(_, split)| split.to_string())
        })
        .unwrap_or_else(|| "train".into())
}

/// Whether `path` matches the glob `pattern`: `*` is any run without `/`, `**` any run, `?` one
/// character other than `/`.
fn glob_match(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p {
            [] => s.is_empty(),
            [b'*', b'*', rest @ ..] => {
                let rest = rest.strip_prefix(b"/").unwrap_or(rest);
                (0..=s.len()).any(|i| go(rest, &s[i..]))
            }
            [b'*', rest @ ..] => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(rest, &s[i..])),
            [b'?', rest @ ..] => !s.is_empty() && s[0] != b'/' && go(rest, &s[1..]),
            [c, rest @ ..] => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_reject_nonsense() {
        let spec = HubDatasetSpec::parse("hf:openai/gsm8k:main:test")
            .unwrap()
            .unwrap();
        assert_eq!(spec.repo, "openai/gsm8k");
        assert_eq!(spec.config.as_deref(), Some("main"));
        assert_eq!(spec.split.as_deref(), Some("test"));
        assert_eq!(spec.name(), "gsm8k");
        let spec = HubDatasetSpec::parse("hf:HuggingFaceH4/MATH-500")
            .unwrap()
            .unwrap();
        assert_eq!((spec.config, spec.split), (None, None));
        assert!(HubDatasetSpec::parse("data/x.jsonl").is_none());
        for bad in ["hf:gsm8k", "hf:a/b/c", "hf:a/b:c:d:e", "hf:../x"] {
            assert!(HubDatasetSpec::parse(bad).unwrap().is_err(), "{bad}");
        }
    }

    #[test]
    fn globs_and_split_names_follow_the_hub() {
        assert!(glob_match(
            "main/test-*",
            "main/test-00000-of-00001.parquet"
        ));
        assert!(!glob_match(
            "main/test-*",
            "main/train-00000-of-00001.parquet"
        ));
        assert!(!glob_match("*.parquet", "data/x.parquet"));
        assert!(glob_match("**/*.parquet", "data/x.parquet"));
        assert!(glob_match(
            "data/train-0000?-of-*.parquet",
            "data/train-00003-of-00009.parquet"
        ));
        assert_eq!(split_of("test.jsonl"), "test");
        assert_eq!(split_of("data/train-00000-of-00002.parquet"), "train");
        assert_eq!(split_of("dev/part.parquet"), "validation");
        assert_eq!(split_of("problems.jsonl"), "train");
    }

    #[test]
    fn card_configs_take_every_data_files_form() {
        let dir = tempfile::tempdir().unwrap();
        let card = dir.path().join(CARD_FILE);
        std::fs::write(
            &card,
            "---\nconfigs:\n- config_name: all\n  data_files: all/*.parquet\n\
             - config_name: two\n  default: true\n  data_files:\n  - split: test\n    path:\n\
             \x20   - a/test-*\n    - b/test-*\n---\n",
        )
        .unwrap();
        let configs = read_card_configs(&card).unwrap();
        assert_eq!(
            configs[0].splits,
            [("train".into(), vec!["all/*.parquet".into()])]
        );
        assert!(configs[1].default);
        assert_eq!(configs[1].splits[0].1, ["a/test-*", "b/test-*"]);
        std::fs::write(&card, "---\nconfigs: [\n---\n").unwrap();
        let error = read_card_configs(&card).unwrap_err().to_string();
        assert!(
            error.contains("README.md") && error.contains("configs"),
            "{error}"
        );
    }

    #[test]
    fn one_part_is_a_config_when_one_has_that_name_else_a_split() {
        let files: Vec<String> = [
            "main/test-0.parquet",
            "main/train-0.parquet",
            "socratic/test-0.parquet",
        ]
        .map(String::from)
        .to_vec();
        let spec = |text: &str| HubDatasetSpec::parse(text).unwrap().unwrap();
        let (config, split, chosen) =
            choose(&spec("hf:openai/gsm8k:main:test"), Vec::new(), &files).unwrap();
        assert_eq!((config.as_str(), split.as_str()), ("main", "test"));
        assert_eq!(chosen, ["main/test-0.parquet"]);
        let error = choose(&spec("hf:openai/gsm8k:main"), Vec::new(), &files).unwrap_err();
        assert!(error.to_string().contains("name a split"), "{error}");
        let error = choose(&spec("hf:openai/gsm8k"), Vec::new(), &files).unwrap_err();
        assert!(error.to_string().contains("main, socratic"), "{error}");
        let flat = vec!["test.jsonl".to_string(), "README.md".to_string()];
        let (config, split, chosen) =
            choose(&spec("hf:HuggingFaceH4/MATH-500:test"), Vec::new(), &flat).unwrap();
        assert_eq!((config.as_str(), split.as_str()), ("default", "test"));
        assert_eq!(chosen, ["test.jsonl"]);
    }
}
