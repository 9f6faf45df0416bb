//! The simulated cloud's state file: a journal of instance records, one JSON line per change, so
//! the cloud outlives the process that runs it and two processes on one machine share it. Every
//! operation holds an exclusive lock on `<file>.lock`, first replays what others appended, then
//! appends its own changes. When the journal grows well past the live state it is rewritten as a
//! snapshot (a new file renamed over the old one, atomically).

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Seek, SeekFrom, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::SimInstance;
use ccm_ports::cloud::{Instance, InstanceState};

/// One instance as written: its state, where it is going and when (wall clock), and the
/// ClientToken and launch counter that made it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Record {
    id: String,
    state: String,
    instance_type: String,
    availability_zone: Option<String>,
    private_ip: Option<String>,
    public_ip: Option<String>,
    image_id: Option<String>,
    launch_time: Option<String>,
    tags: BTreeMap<String, String>,
    state_reason: Option<String>,
    /// The next state and its time in Unix milliseconds.
    next: Option<(String, u64)>,
    token: Option<String>,
    launched: u64,
}

fn unix_millis(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

impl Record {
    pub(super) fn new(sim: &SimInstance, token: Option<&str>, launched: u64) -> Record {
        let i = &sim.instance;
        let now = Instant::now();
        let wall = SystemTime::now();
        Record {
            id: i.id.clone(),
            state: i.state.as_str().to_owned(),
            instance_type: i.instance_type.clone(),
            availability_zone: i.availability_zone.clone(),
            private_ip: i.private_ip.clone(),
            public_ip: i.public_ip.clone(),
            image_id: i.image_id.clone(),
            launch_time: i.launch_time.map(|t| t.to_string()),
            tags: i.tags.clone(),
            state_reason: i.state_reason.clone(),
            next: sim.next.map(|(state, at)| {
                let at = wall + at.saturating_duration_since(now);
                (state.as_str().to_owned(), unix_millis(at))
            }),
            token: token.map(str::to_owned),
            launched,
        }
    }

    /// The instance, with its next transition on this process's clock.
    pub(super) fn instance(&self) -> Option<SimInstance> {
        let state = InstanceState::parse(&self.state)?;
        let now_ms = unix_millis(SystemTime::now());
        let next = match &self.next {
            Some((s, at_ms)) => Some((
                InstanceState::parse(s)?,
                Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms)),
            )),
            None => None,
        };
        Some(SimInstance {
            instance: Instance {
                id: self.id.clone(),
                state,
                instance_type: self.instance_type.clone(),
                availability_zone: self.availability_zone.clone(),
                private_ip: self.private_ip.clone(),
                public_ip: self.public_ip.clone(),
                image_id: self.image_id.clone(),
                launch_time: self
                    .launch_time
                    .as_deref()
                    .and_then(|t| t.parse::<Timestamp>().ok()),
                tags: self.tags.clone(),
                state_reason: self.state_reason.clone(),
            },
            next,
        })
    }

    pub(super) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub(super) fn launched(&self) -> u64 {
        self.launched
    }
}

/// What was read since last time: everything (the file was new or rewritten) or what was added.
pub(super) enum Replay {
    Reset(Vec<Record>),
    Added(Vec<Record>),
}

pub(super) struct Journal {
    path: PathBuf,
    lock: File,
    /// The file read so far: its inode and how far.
    inode: u64,
    offset: u64,
    /// Lines in the file, to know when a snapshot would be much smaller.
    lines: u64,
}

/// Holds the journal's lock until dropped (a handle on the same open file, so flock applies).
pub(super) struct Locked(File);

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl Journal {
    pub(super) fn open(path: &Path) -> std::io::Result<Journal> {
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(PathBuf::from(lock_path))?;
        Ok(Journal {
            path: path.to_owned(),
            lock,
            inode: 0,
            offset: 0,
            lines: 0,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the lock shared by every process using the file (blocking, briefly).
    pub(super) fn lock(&self) -> std::io::Result<Locked> {
        let handle = self.lock.try_clone()?;
        handle.lock()?;
        Ok(Locked(handle))
    }

    /// The records written since the last call (by anyone). Call with the lock held.
    pub(super) fn read_new(&mut self) -> std::io::Result<Replay> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let reset = self.inode != 0;
                (self.inode, self.offset, self.lines) = (0, 0, 0);
                return Ok(if reset {
                    Replay::Reset(Vec::new())
                } else {
                    Replay::Added(Vec::new())
                });
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let reset = meta.ino() != self.inode || meta.len() < self.offset;
        if reset {
            (self.inode, self.offset, self.lines) = (meta.ino(), 0, 0);
        }
        let mut reader = BufReader::new(file);
        reader.seek(SeekFrom::Start(self.offset))?;
        let mut records = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line)?;
            // A line without its newline is still being written by no one (writes happen under
            // the lock), so it can only be a torn write of a crashed process: stop before it.
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            self.offset += n as u64;
            self.lines += 1;
            let record = serde_json::from_str(line.trim_end())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            records.push(record);
        }
        Ok(if reset {
            Replay::Reset(records)
        } else {
            Replay::Added(records)
        })
    }

    /// Appends `records`. Call with the lock held, after [`Journal::read_new`].
    pub(super) fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for r in records {
            text.push_str(&serde_json::to_string(r).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let meta = file.metadata()?;
        if self.inode != meta.ino() {
            // The file was just created by this append.
            (self.inode, self.offset, self.lines) = (meta.ino(), 0, 0);
        } else if meta.len() > self.offset {
            // The torn last line of a crashed writer (read_new stopped before it): drop it.
            file.set_len(self.offset)?;
        }
        file.write_all(text.as_bytes())?;
        self.offset += text.len() as u64;
        self.lines += records.len() as u64;
        Ok(())
    }

    /// Whether a snapshot of `live` records would be much smaller than the journal.
    pub(super) fn worth_compacting(&self, live: usize) -> bool {
        self.lines > 1000 && self.lines > 4 * live as u64
    }

    /// Rewrites the journal as `records` (a new file renamed over the old one). Call with the
    /// lock held, after [`Journal::read_new`].
    pub(super) fn compact(&mut self, records: &[Record]) -> std::io::Result<()> {
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut text = String::new();
        for r in records {
            text.push_str(&serde_json::to_string(r).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        let mut file = File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        let meta = std::fs::metadata(&self.path)?;
        (self.inode, self.offset, self.lines) =
            (meta.ino(), text.len() as u64, records.len() as u64);
        Ok(())
    }
}
