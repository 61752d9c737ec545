//! Removing an epoll entry that outlived its registration (an *orphan*).
//!
//! The kernel keys an epoll entry by (open file, fd number) and finds it,
//! for `EPOLL_CTL_DEL`, through the file that the number names in the
//! caller's descriptor table. When a watched fd is closed while another
//! descriptor (a `dup`) keeps its file open, the entry stays in the set,
//! and the number now names another file or nothing: no `epoll_ctl` in
//! this process can name the entry any more. A level-triggered orphan that
//! is ready then wakes the loop on every wait (measured: about 250,000
//! wake-ups per 100 ms) for a token that is long gone.
//!
//! The means chosen to stop it: a short-lived thread takes a private copy
//! of the descriptor table (`unshare(CLONE_FILES)`), points the old number
//! at a surviving descriptor of the orphan's file there (`dup2`), and
//! removes the entry with `EPOLL_CTL_DEL`. The process's own table is
//! never touched; the copy, and with it every duplicate it holds, goes
//! away with the thread (closing a duplicate releases neither a file, nor
//! a POSIX lock, nor any other epoll entry). The orphan is found in
//! `/proc/self/fdinfo/<epoll fd>` by its token, and its surviving
//! descriptors by their device and inode.
//!
//! Why this and not the alternatives: rebuilding the whole epoll set would
//! also drop the orphan, but it changes the loop's descriptor, which a host
//! loop that nests the engine has registered (and an epoll-based host
//! would silently lose it); `EPOLLONESHOT` on every watch would keep an
//! orphan from firing twice but costs 4x per event. What this cannot do:
//! remove an orphan whose file is kept open only by *another process* (a
//! child's inherited copy), or where `/proc` or `unshare` is unavailable.
//! Those are counted ([`Stats::orphans_left`](crate::Stats)), and the
//! loop keeps waking for them until the last copy of the file is closed.
//! Owning registrations (the engine holds the fd and closes it only after
//! its kernel entry is gone) make orphans impossible in the first place.

use crate::token::Token;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// What became of an orphan the loop suspected.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Outcome {
    /// It was in the set and has been removed.
    Removed,
    /// It is in the set and could not be removed.
    Left,
    /// The set holds no entry for the token (nothing to do).
    NotFound,
}

/// An entry of an epoll set, as `/proc/self/fdinfo` shows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct EntryInfo {
    fd: RawFd,
    ino: u64,
    /// The kernel's internal device number of the file's superblock
    /// (major in the high 12 bits of 32, minor in the low 20).
    sdev: u64,
}

/// Parses one `tfd: ... data: ... ino: ... sdev: ...` line of an epoll
/// fdinfo file; `None` for other lines or another token.
fn parse_entry(line: &str, token: Token) -> Option<EntryInfo> {
    let mut fields = line.split_whitespace();
    let mut info = EntryInfo {
        fd: -1,
        ino: 0,
        sdev: 0,
    };
    let mut data = None;
    while let Some(key) = fields.next() {
        // Keys are `tfd:`, `data:`; values may follow after spaces, or
        // stick to the key as in `pos:0 ino:40e sdev:10`.
        let (key, glued) = key.split_once(':')?;
        let value = if glued.is_empty() {
            fields.next()?
        } else {
            glued
        };
        match key {
            "tfd" => info.fd = value.parse().ok()?,
            "data" => data = u64::from_str_radix(value, 16).ok(),
            "ino" => info.ino = u64::from_str_radix(value, 16).ok()?,
            "sdev" => info.sdev = u64::from_str_radix(value, 16).ok()?,
            _ => {}
        }
    }
    (data == Some(token.as_u64()) && info.fd >= 0).then_some(info)
}

fn find_entry(epfd: BorrowedFd<'_>, token: Token) -> Option<EntryInfo> {
    let path = format!("/proc/self/fdinfo/{}", epfd.as_raw_fd());
    let file = std::fs::File::open(path).ok()?;
    BufReader::new(file)
        .lines()
        .map_while(|l| l.ok())
        .find_map(|l| parse_entry(&l, token))
}

/// `(device, inode)` of what `fd` names, with the device as (major, minor).
fn identity(fd: RawFd) -> Option<((u32, u32), u64)> {
    // SAFETY: an all-zero `stat` is a valid value (plain C struct).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer; a bad fd is an error return.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some(((libc::major(st.st_dev), libc::minor(st.st_dev)), st.st_ino))
}

/// Whether descriptors `a` and `b` of the calling thread's table name the
/// same open file; `None` when the kernel cannot say (no `kcmp`).
fn same_file(a: RawFd, b: RawFd) -> Option<bool> {
    // SAFETY: gettid takes nothing and cannot fail.
    let tid = unsafe { libc::gettid() };
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp compares two descriptors of this thread's table; it
    // reads no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            tid,
            tid,
            KCMP_FILE,
            a as libc::c_long,
            b as libc::c_long,
        )
    };
    match r {
        0 => Some(true),
        1..=3 => Some(false),
        _ => None,
    }
}

/// Descriptors of the calling thread's table that may name the orphan's
/// file: the same device and inode, and not the file that the orphan's
/// number names now (removing *that* entry would remove a live watch's).
fn candidates(entry: &EntryInfo) -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/thread-self/fd") else {
        return Vec::new();
    };
    let want = (
        ((entry.sdev >> 20) as u32, (entry.sdev & 0xf_ffff) as u32),
        entry.ino,
    );
    let number_now = identity(entry.fd);
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|&d| d != entry.fd && identity(d) == Some(want))
        .filter(|&d| match same_file(d, entry.fd) {
            Some(same) => !same,
            // Without kcmp, a descriptor is taken only when the old number
            // cannot name the same file.
            None => number_now != Some(want),
        })
        .collect()
}

/// In a private copy of the descriptor table (the calling thread's, after
/// `unshare`): points the orphan's number at each candidate in turn and
/// tries to delete the entry.
fn remove_in_private_table(ep: RawFd, entry: EntryInfo) -> bool {
    // SAFETY: unshare(CLONE_FILES) gives this thread a private copy of the
    // descriptor table; it takes no pointers.
    if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
        return false;
    }
    // Looked for in the private copy, which nothing else changes: what is
    // checked is what `dup2` then uses.
    candidates(&entry).into_iter().any(|d| {
        // SAFETY: both are descriptors of the private copy; dup2 replaces
        // the copy's `entry.fd`, never the process's own.
        if unsafe { libc::dup2(d, entry.fd) } < 0 {
            return false;
        }
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` is a valid epoll_event; the entry named is (file of
        // `d`, `entry.fd`), an orphan by the choice of candidates.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, entry.fd, &mut ev) == 0 }
    })
}

/// Removes the entry of `epfd` whose data is `token`, if it is there.
pub(crate) fn remove(epfd: BorrowedFd<'_>, token: Token) -> Outcome {
    let Some(entry) = find_entry(epfd, token) else {
        return Outcome::NotFound;
    };
    let ep = epfd.as_raw_fd();
    let removed = std::thread::Builder::new()
        .name("evnexus-orphan".into())
        .spawn(move || remove_in_private_table(ep, entry))
        .ok()
        .and_then(|t| t.join().ok())
        .unwrap_or(false);
    if removed {
        Outcome::Removed
    } else {
        Outcome::Left
    }
}

#[cfg(all(test, not(evnexus_loom)))]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_lines_parse_with_glued_and_spaced_values() {
        let t = Token::from_u64(0xabc);
        let line = "tfd:        4 events:       19 data:              abc  pos:0 ino:40e sdev:10";
        assert_eq!(
            parse_entry(line, t),
            Some(EntryInfo {
                fd: 4,
                ino: 0x40e,
                sdev: 0x10
            })
        );
        assert_eq!(parse_entry(line, Token::from_u64(0xabd)), None);
        assert_eq!(parse_entry("pos:\t0", t), None);
        assert_eq!(parse_entry("flags:\t02", t), None);
    }
}
