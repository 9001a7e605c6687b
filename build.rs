//! Embeds every file of `sql/migrations` in the binary, in name order, so that
//! adding a migration is adding a file (`store::migrate` and its test read the
//! generated list).

use std::{env, fmt::Write as _, fs, path::PathBuf};

fn main() {
    let dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("sql/migrations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("sql/migrations is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    let mut list = String::from("&[\n");
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let version = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("UTF-8 file name");
        writeln!(
            list,
            "    Migration {{ version: {version:?}, sql: include_str!({:?}) }},",
            path.display().to_string()
        )
        .expect("writing to a String");
    }
    list.push_str("]\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo")).join("migrations.rs");
    fs::write(out, list).expect("OUT_DIR is writable");
}
