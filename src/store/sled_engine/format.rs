//! The engine's on-disk format outside sled: the directory layout, the `RECKON_STORE` marker
//! (format name and store schema, readable without opening sled), the fixed-size `HEAD` file,
//! durable writes of control files, and the sled settings a store is always opened with.

use super::super::StoreError;
use crate::event::Digest;
use std::fs;
use std::io::Write;
use std::path::Path;

pub const MARKER_FILE: &str = "RECKON_STORE";
pub const HEAD_FILE: &str = "HEAD";
pub const SLED_DIR: &str = "db";
pub(super) const MARKER_MAGIC: &str = "reckon-store";
pub(super) const META_SCHEMA: &[u8] = b"Mschema";
pub(super) const SNAPSHOT_KEY: &[u8] = b"projections";
/// sled log segment size. sled reclaims a segment only once half of it is garbage and writes
/// large nodes out of line above a quarter segment; at 1M events the default 512 KiB measured
/// 657 bytes/event on disk, 8 MiB 343 (and faster appends). sled persists it in `db/conf`:
/// changing it is a format change.
pub(super) const SEGMENT_BYTES: usize = 8 << 20;
/// `HEAD`'s size: its two lines, then spaces up to a final newline (readers trim lines and
/// ignore others, so reckon before this padding reads it too). A fixed size lets each flush
/// rewrite it in place — one `pwrite` at offset 0 and one `fdatasync` — instead of a temp file,
/// `fsync`, rename and directory `fsync` (four syscalls that touch the file system's journal,
/// 12% of the agent's CPU at a thousand Apps). Why that is as safe: the file never changes
/// size or name, so syncing its data is all there is to sync; a process crash leaves whatever
/// the last `pwrite` put in the kernel's page cache, whole; after a power loss the write is
/// one write inside the first 512-byte sector, which disks write atomically — the assumption
/// PostgreSQL's `pg_control` rests on (`PG_CONTROL_MAX_SAFE_SIZE`). Should a disk tear it
/// anyway, the HEAD is unparsable or names a hash the log does not have, and opening says so
/// (`Corrupt`): loud, never a silent loss.
pub const HEAD_BYTES: usize = 128;
/// Events appended in one session after which closing has sled write its snapshot
/// (`open::snapshot_sled`): below it the replay it saves the next open is milliseconds, and
/// the extra open at close would cost more than it saves.
pub(super) const SLED_SNAPSHOT_AFTER: u64 = 100_000;

pub(super) fn parse_marker(text: &str) -> Result<u32, String> {
    let mut lines = text.lines();
    if lines.next() != Some(MARKER_MAGIC) {
        return Err(format!(
            "{MARKER_FILE} does not start with `{MARKER_MAGIC}`"
        ));
    }
    lines
        .find_map(|l| l.strip_prefix("schema "))
        .ok_or_else(|| format!("{MARKER_FILE} has no `schema` line"))?
        .trim()
        .parse()
        .map_err(|e| format!("{MARKER_FILE}: bad schema: {e}"))
}

pub(super) fn marker_text(schema: u32) -> String {
    format!("{MARKER_MAGIC}\nschema {schema}\n")
}

/// Writes `name` in `dir` atomically and durably: temp file, fsync, rename, fsync the directory.
pub(crate) fn write_durably(dir: &Path, name: &str, content: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let op = "writing a control file";
    let mut f = fs::File::create(&tmp).map_err(|e| StoreError::io(&tmp, op, e))?;
    f.write_all(content)
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::io(&tmp, op, e))?;
    fs::rename(&tmp, dir.join(name)).map_err(|e| StoreError::io(dir, op, e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, op, e))
}

/// `HEAD`'s content: `seq N`, `hash H`, padded to [`HEAD_BYTES`] with a line of spaces.
pub(super) fn head_text(seq: u64, hash: Digest) -> Vec<u8> {
    let mut text = format!("seq {seq}\nhash {hash}\n").into_bytes();
    // 25 + 70 bytes at most (a u64 and a 32-byte hash in hex): the padding line always fits.
    text.resize(HEAD_BYTES - 1, b' ');
    text.push(b'\n');
    text
}

/// The flushed head `HEAD` records in the store at `store`; `None` when there is no `HEAD` yet
/// (a store that never appended) or it does not parse.
pub fn read_head(store: &Path) -> std::io::Result<Option<(u64, Digest)>> {
    match fs::read_to_string(store.join(HEAD_FILE)) {
        Ok(text) => Ok(parse_head(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) fn parse_head(text: &str) -> Option<(u64, Digest)> {
    let mut seq = None;
    let mut hash = None;
    for l in text.lines() {
        if let Some(s) = l.strip_prefix("seq ") {
            seq = s.trim().parse().ok();
        } else if let Some(h) = l.strip_prefix("hash ") {
            hash = Digest::from_hex(h.trim());
        }
    }
    Some((seq?, hash?))
}

pub(super) fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// The sled configuration of a store (the settings sled persists must match on every open).
/// Public for tools and fault-injection tests that open the raw database of a closed store.
pub fn sled_config(store: &Path, cache_bytes: u64) -> sled::Config {
    sled::Config::new()
        .path(store.join(SLED_DIR))
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::HighThroughput)
        .segment_size(SEGMENT_BYTES)
}

/// Bytes the store occupies: `(apparent, allocated)` over all files (all trees, control files).
pub fn size_on_disk(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        let m = entry.metadata()?;
        if m.is_dir() {
            let (a, b) = size_on_disk(&entry.path())?;
            total = (total.0 + a, total.1 + b);
        } else {
            total = (total.0 + m.len(), total.1 + m.blocks() * 512);
        }
    }
    Ok(total)
}
