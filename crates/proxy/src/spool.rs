//! Large captured bodies held on disk, encrypted, until the consumer takes them.
//!
//! A capture keeps a body's first `--body-limit` bytes (4 MiB by default) until the flow ends;
//! the consumer then decodes and redacts it whole. Held in memory, four parallel downloads held
//! four such buffers at once, and more while the recorder caught up (measured: 60 MB resident
//! against hudsucker's 19 MB). So when the consumer asks for it
//! ([`crate::EventReceiver::spool_large_bodies`]), a capture that grows past [`SPOOL_AT`] bytes
//! moves to a [`Spool`]: an unnamed temporary file (gone when closed, even after a crash; in
//! the session directory when the consumer records one, since `/tmp` may be memory),
//! written in blocks sealed with AES-256-GCM under a key that exists only in this process's
//! memory, so the raw body, secrets included, never reaches a disk readably. The consumer
//! gets the bytes back one flow at a time ([`Spools::unspool`]) and redacts them exactly as
//! before.

use bytes::Bytes;
use mcptap_flow::{Direction, FlowEvent, FlowId};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom as _, SystemRandom};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read as _, Seek as _, Write as _};
use std::sync::{Arc, Mutex};

/// A capture that grows past this many bytes moves to a spool (MCP and OAuth bodies are
/// smaller and stay in memory).
pub(crate) const SPOOL_AT: usize = 512 * 1024;
/// Plain bytes per sealed block.
const BLOCK: usize = 128 * 1024;
/// What sealing adds to a block.
const TAG: usize = 16;

/// A body being spooled.
pub(crate) struct Spool {
    file: File,
    key: LessSafeKey,
    /// Blocks sealed and written.
    blocks: u64,
    /// Plain bytes of the block being filled (sealed in place when full).
    staged: Vec<u8>,
    /// Plain bytes pushed in all.
    len: usize,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("len", &self.len).finish()
    }
}

fn nonce(block: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[NONCE_LEN - 8..].copy_from_slice(&block.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn sealing(_: ring::error::Unspecified) -> io::Error {
    io::Error::other("the spooled body could not be sealed or opened")
}

impl Spool {
    /// A new spool: an unnamed temporary file in `dir` (the system's temporary directory
    /// when `None`) and a fresh key.
    pub(crate) fn new(dir: Option<&std::path::Path>) -> io::Result<Spool> {
        let mut key = [0u8; 32];
        SystemRandom::new().fill(&mut key).map_err(sealing)?;
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).map_err(sealing)?);
        let file = match dir {
            Some(d) => tempfile::tempfile_in(d)?,
            None => tempfile::tempfile()?,
        };
        Ok(Spool {
            file,
            key,
            blocks: 0,
            staged: Vec::with_capacity(BLOCK + TAG),
            len: 0,
        })
    }

    /// Plain bytes pushed so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `data`.
    pub(crate) fn push(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = (BLOCK - self.staged.len()).min(data.len());
            self.staged.extend_from_slice(&data[..n]);
            data = &data[n..];
            self.len += n;
            if self.staged.len() == BLOCK {
                self.seal()?;
            }
        }
        Ok(())
    }

    fn seal(&mut self) -> io::Result<()> {
        self.key
            .seal_in_place_append_tag(nonce(self.blocks), Aad::empty(), &mut self.staged)
            .map_err(sealing)?;
        let res = self.file.write_all(&self.staged);
        self.staged.clear();
        res?;
        self.blocks += 1;
        Ok(())
    }

    /// The whole body, spooled.
    pub(crate) fn finish(mut self) -> io::Result<Spooled> {
        if !self.staged.is_empty() {
            self.seal()?;
        }
        Ok(Spooled {
            file: self.file,
            key: self.key,
            len: self.len,
        })
    }
}

/// A spooled body waiting for its consumer.
pub(crate) struct Spooled {
    file: File,
    key: LessSafeKey,
    len: usize,
}

impl Spooled {
    /// The body's bytes, read back and opened.
    fn load(mut self) -> io::Result<Bytes> {
        // Each block is read and opened in place at its spot in the body (room for one tag).
        let mut out = crate::capture_pool::take(self.len + TAG);
        self.file.rewind()?;
        let mut n = 0u64;
        while out.len() < self.len {
            let at = out.len();
            let plain = (self.len - at).min(BLOCK);
            out.resize(at + plain + TAG, 0);
            self.file.read_exact(&mut out[at..])?;
            self.key
                .open_in_place(nonce(n), Aad::empty(), &mut out[at..])
                .map_err(sealing)?;
            out.truncate(at + plain);
            n += 1;
        }
        Ok(crate::capture_pool::freeze(out))
    }
}

/// The spooled bodies of one event channel, by flow and side, until their final event is
/// consumed (or dropped).
#[derive(Default)]
pub(crate) struct Registry {
    bodies: Mutex<HashMap<(FlowId, bool), Spooled>>,
    /// Where spool files go (`None`: the system's temporary directory).
    dir: std::sync::OnceLock<Option<std::path::PathBuf>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

fn key(id: FlowId, dir: Direction) -> (FlowId, bool) {
    (id, dir == Direction::Response)
}

impl Registry {
    /// Spool files go to `dir` (set once: later calls are ignored).
    pub(crate) fn set_dir(&self, dir: Option<std::path::PathBuf>) {
        let _ = self.dir.set(dir);
    }

    /// Where spool files go.
    pub(crate) fn dir(&self) -> Option<&std::path::Path> {
        self.dir.get().and_then(|d| d.as_deref())
    }

    /// Holds `body` of flow `id`'s side `dir` until its final event is consumed.
    pub(crate) fn put(&self, id: FlowId, dir: Direction, body: Spooled) {
        let mut map = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(key(id, dir), body);
    }

    /// Forgets flow `id`'s bodies (its final event was dropped).
    pub(crate) fn forget(&self, id: FlowId) {
        let mut map = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&key(id, Direction::Request));
        map.remove(&key(id, Direction::Response));
    }

    fn take(&self, id: FlowId, dir: Direction) -> Option<Spooled> {
        let mut map = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&key(id, dir))
    }

    /// Bodies held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.bodies.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The consumer's side of an event channel whose large bodies are spooled: puts them back into
/// their flows ([`crate::EventReceiver::spool_large_bodies`]).
#[derive(Debug, Clone)]
pub struct Spools(pub(crate) Arc<Registry>);

impl Spools {
    /// Puts the spooled bodies of a final event back into its flow (other events are left
    /// alone). A body that cannot be read back (the temporary file's disk failed) is recorded
    /// empty and truncated.
    pub fn unspool(&self, event: &mut FlowEvent) {
        let (FlowEvent::Completed { flow } | FlowEvent::Failed { flow }) = event else {
            return;
        };
        let reg = &self.0;
        let id = flow.id;
        let fill = |dir: Direction, body: &mut mcptap_flow::CapturedBody| {
            if let Some(s) = reg.take(id, dir) {
                match s.load() {
                    Ok(b) => body.bytes = b,
                    Err(e) => {
                        tracing::warn!("flow {id}: a spooled body could not be read back: {e}");
                        body.bytes = Bytes::new();
                        body.truncated = true;
                    }
                }
            }
        };
        fill(Direction::Request, &mut flow.request.body);
        if let Some(resp) = flow.response.as_mut() {
            fill(Direction::Response, &mut resp.body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spooled_body_comes_back_exact_and_is_not_on_disk_in_clear() {
        let body: Vec<u8> = (0..BLOCK * 3 + 1234)
            .map(|i| b"access_token=secret-value-1234;"[i % 31])
            .collect();
        let mut spool = Spool::new(None).unwrap();
        for chunk in body.chunks(10_000) {
            spool.push(chunk).unwrap();
        }
        assert_eq!(spool.len(), body.len());
        let mut spooled = spool.finish().unwrap();
        let mut on_disk = Vec::new();
        spooled.file.rewind().unwrap();
        spooled.file.read_to_end(&mut on_disk).unwrap();
        assert_eq!(on_disk.len(), body.len() + 4 * TAG);
        let needle = b"secret-value";
        assert!(
            !on_disk.windows(needle.len()).any(|w| w == needle),
            "the raw secret reached the disk"
        );
        assert_eq!(&spooled.load().unwrap()[..], &body[..]);
    }
}
