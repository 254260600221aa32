//! Packet capture in the classic libpcap format: a [`PcapWriter`], a
//! [`PcapReader`] to read files back, and [`PcapDevice`], a wrapper that
//! records every frame any [`Device`] receives and transmits.
//!
//! Files use magic `0xa1b2c3d4` (microsecond timestamps), little-endian,
//! `LINKTYPE_ETHERNET` (1) and a snap length of 65535: tcpdump, tshark and
//! Wireshark open them directly.
//!
//! # Timestamps
//!
//! Timestamps are the core's [`Instant`]s, not a wall clock: the wrapper
//! never reads a clock itself. A received frame is stamped with the `now`
//! passed to `recv`; a transmitted frame with the latest `now` the wrapper has
//! seen, from `recv` or from [`PcapDevice::set_now`] (call it before sending
//! when nothing was received first). The clock never goes backwards. Because
//! an `Instant` counts from an epoch its owner chose (process start, or zero in
//! a simulation), files start near 1970 unless the owner sets that epoch's
//! wall-clock time with [`PcapWriter::set_epoch`].

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use ustack_core::phy::{Device, DeviceCaps, RxMeta, RxQueue, TxFull, TxMeta, TxQueue};
use ustack_core::time::{Duration, Instant};

/// Magic number of a microsecond-resolution pcap file.
pub const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
/// Magic number of a nanosecond-resolution pcap file (read, never written).
const PCAP_MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// Link type of Ethernet frames.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Bytes of each frame kept; longer frames are cut, their length recorded.
pub const SNAPLEN: u32 = 65535;

/// Writes frames to a pcap stream. Flushes when dropped.
pub struct PcapWriter<W: Write> {
    out: W,
    /// Microseconds added to every timestamp (see [`set_epoch`](Self::set_epoch)).
    epoch_micros: u64,
}

impl PcapWriter<BufWriter<File>> {
    /// Create (or truncate) the file at `path` and write the file header.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        PcapWriter::new(BufWriter::new(File::create(path)?))
    }
}

impl<W: Write> PcapWriter<W> {
    /// Write the file header to `out`.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut header = [0u8; 24];
        header[0..4].copy_from_slice(&PCAP_MAGIC.to_le_bytes());
        header[4..6].copy_from_slice(&2u16.to_le_bytes()); // version 2.4
        header[6..8].copy_from_slice(&4u16.to_le_bytes());
        // 8..16: thiszone and sigfigs, zero.
        header[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        header[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&header)?;
        Ok(PcapWriter { out, epoch_micros: 0 })
    }

    /// Declare the wall-clock time (since the UNIX epoch) of `Instant::ZERO`,
    /// so timestamps read as dates. Zero by default.
    pub fn set_epoch(&mut self, unix_time_of_zero: Duration) {
        self.epoch_micros = u64::try_from(unix_time_of_zero.as_micros()).unwrap_or(u64::MAX);
    }

    /// Append one frame captured at `ts`.
    pub fn write_frame(&mut self, ts: Instant, frame: &[u8]) -> io::Result<()> {
        let micros = ts.total_micros().saturating_add(self.epoch_micros);
        let caplen = frame.len().min(SNAPLEN as usize);
        let mut record = [0u8; 16];
        // pcap's 32-bit seconds run out in 2106; wrap like libpcap does.
        record[0..4].copy_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        record[4..8].copy_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        record[8..12].copy_from_slice(&(caplen as u32).to_le_bytes());
        record[12..16].copy_from_slice(&u32::try_from(frame.len()).unwrap_or(u32::MAX).to_le_bytes());
        self.out.write_all(&record)?;
        self.out.write_all(&frame[..caplen])
    }

    /// Push buffered records to the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

impl<W: Write> Drop for PcapWriter<W> {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

/// One frame read back by [`PcapReader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcapRecord {
    /// Capture time, with microsecond resolution.
    pub ts: Instant,
    /// Length of the frame on the wire (may exceed `data.len()` if cut).
    pub orig_len: usize,
    /// The captured bytes.
    pub data: Vec<u8>,
}

/// Reads classic pcap files (either byte order, micro- or nanosecond
/// timestamps), e.g. to check a capture in a test.
pub struct PcapReader<R: Read> {
    input: R,
    big_endian: bool,
    nanos: bool,
    link_type: u32,
}

/// Largest record accepted, so a corrupt length cannot ask for gigabytes.
const MAX_RECORD: usize = 256 * 1024;

impl<R: Read> PcapReader<R> {
    /// Read and check the file header.
    pub fn new(mut input: R) -> io::Result<Self> {
        let mut header = [0u8; 24];
        input.read_exact(&mut header)?;
        let magic_le = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let magic_be = u32::from_be_bytes(header[0..4].try_into().expect("4 bytes"));
        let (big_endian, nanos) = match (magic_le, magic_be) {
            (PCAP_MAGIC, _) => (false, false),
            (PCAP_MAGIC_NANOS, _) => (false, true),
            (_, PCAP_MAGIC) => (true, false),
            (_, PCAP_MAGIC_NANOS) => (true, true),
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "not a classic pcap file (bad magic)")),
        };
        let mut reader = PcapReader { input, big_endian, nanos, link_type: 0 };
        reader.link_type = reader.u32_at(&header, 20);
        Ok(reader)
    }

    /// The file's link type ([`LINKTYPE_ETHERNET`] for ours).
    pub fn link_type(&self) -> u32 {
        self.link_type
    }

    fn u32_at(&self, bytes: &[u8], at: usize) -> u32 {
        let b: [u8; 4] = bytes[at..at + 4].try_into().expect("4 bytes");
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// The next frame, `None` at a clean end of file.
    pub fn next_record(&mut self) -> io::Result<Option<PcapRecord>> {
        let mut header = [0u8; 16];
        match self.input.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let secs = u64::from(self.u32_at(&header, 0));
        let frac = u64::from(self.u32_at(&header, 4));
        let micros = secs * 1_000_000 + if self.nanos { frac / 1000 } else { frac };
        let caplen = self.u32_at(&header, 8) as usize;
        if caplen > MAX_RECORD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("record of {caplen} bytes")));
        }
        let mut data = vec![0; caplen];
        self.input.read_exact(&mut data)?;
        let orig_len = self.u32_at(&header, 12) as usize;
        Ok(Some(PcapRecord { ts: Instant::from_micros(micros), orig_len, data }))
    }
}

impl<R: Read> Iterator for PcapReader<R> {
    type Item = io::Result<PcapRecord>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// The writer and clock shared by a [`PcapDevice`]'s two queues.
struct Capture<W: Write> {
    writer: PcapWriter<W>,
    now: Instant,
    errors: u64,
    first_error: Option<io::Error>,
}

impl<W: Write> Capture<W> {
    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn record(&mut self, ts: Instant, frame: &[u8]) {
        if let Err(e) = self.writer.write_frame(ts, frame) {
            self.failed(e);
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.writer.flush() {
            self.failed(e);
        }
    }

    fn failed(&mut self, e: io::Error) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// Wraps a device and records every frame it receives and transmits.
///
/// Transmitted frames are recorded after `fill` ran, only for sends the inner
/// device accepted and filled. The capture is flushed on every `flush` of the
/// transmit queue and when the wrapper is dropped. Write errors do not disturb
/// traffic: they are counted ([`capture_errors`](Self::capture_errors)) and the
/// first one is kept ([`take_error`](Self::take_error)).
pub struct PcapDevice<D: Device, W: Write = BufWriter<File>> {
    inner: D,
    /// Shared by the two queues a poll borrows at once; never borrowed
    /// across a call into the inner device that could re-enter it.
    capture: RefCell<Capture<W>>,
}

impl<D: Device> PcapDevice<D> {
    /// Wrap `inner`, capturing to a new file at `path`.
    pub fn create(inner: D, path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(PcapDevice::new(inner, PcapWriter::create(path)?))
    }
}

impl<D: Device, W: Write> PcapDevice<D, W> {
    /// Wrap `inner`, capturing through `writer`.
    pub fn new(inner: D, writer: PcapWriter<W>) -> Self {
        let capture = RefCell::new(Capture { writer, now: Instant::ZERO, errors: 0, first_error: None });
        PcapDevice { inner, capture }
    }

    /// Advance the capture clock used to stamp transmitted frames.
    pub fn set_now(&mut self, now: Instant) {
        self.capture.get_mut().advance(now);
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The wrapped device, mutably (e.g. to set a memory port's clock).
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Writes to the capture that failed so far.
    pub fn capture_errors(&self) -> u64 {
        self.capture.borrow().errors
    }

    /// The first capture write error, if any (taken: the next call says `None`
    /// until another error).
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.capture.get_mut().first_error.take()
    }

    /// Push buffered records to the file now.
    pub fn flush_capture(&mut self) {
        self.capture.get_mut().flush();
    }
}

impl<D: Device, W: Write> Device for PcapDevice<D, W> {
    type Rx<'a>
        = PcapRx<'a, D::Rx<'a>, W>
    where
        Self: 'a;
    type Tx<'a>
        = PcapTx<'a, D::Tx<'a>, W>
    where
        Self: 'a;

    fn queues(&mut self) -> (Self::Rx<'_>, Self::Tx<'_>) {
        let (rx, tx) = self.inner.queues();
        let capture = &self.capture;
        (PcapRx { inner: rx, capture }, PcapTx { inner: tx, capture })
    }

    fn caps(&self) -> DeviceCaps {
        self.inner.caps()
    }
}

/// Receive side of a [`PcapDevice`], lent for one poll.
pub struct PcapRx<'a, R, W: Write> {
    inner: R,
    capture: &'a RefCell<Capture<W>>,
}

impl<R: RxQueue, W: Write> RxQueue for PcapRx<'_, R, W> {
    fn recv(&mut self, now: Instant) -> Option<(&[u8], RxMeta)> {
        // Advance the clock even when nothing arrives: frames the stack sends
        // from its timers in this poll are stamped with it.
        self.capture.borrow_mut().advance(now);
        let (frame, meta) = self.inner.recv(now)?;
        self.capture.borrow_mut().record(now, frame);
        Some((frame, meta))
    }
}

/// Transmit side of a [`PcapDevice`], lent for one poll.
pub struct PcapTx<'a, T, W: Write> {
    inner: T,
    capture: &'a RefCell<Capture<W>>,
}

impl<T: TxQueue, W: Write> TxQueue for PcapTx<'_, T, W> {
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, meta: TxMeta, fill: F) -> Result<(), TxFull> {
        let capture = self.capture;
        self.inner.send(len, meta, |buf| {
            fill(buf);
            let mut capture = capture.borrow_mut();
            let now = capture.now;
            capture.record(now, buf);
        })
    }

    fn flush(&mut self) {
        self.inner.flush();
        self.capture.borrow_mut().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{LinkConfig, MemoryLink};
    use std::path::PathBuf;
    use std::process::Command;

    /// A file path unique to this process and test, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(tag: &str) -> TempFile {
            TempFile(std::env::temp_dir().join(format!("ustack-device-{}-{tag}.pcap", std::process::id())))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// An ARP request from `sender` for `target`, as 42 bytes.
    fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mac = [0x02, 0, 0, 0, 0, sender[3]];
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&sender);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f
    }

    fn send(dev: &mut impl Device, frame: &[u8]) {
        let (_, mut tx) = dev.queues();
        tx.send(frame.len(), TxMeta::default(), |b| b.copy_from_slice(frame)).unwrap();
        tx.flush();
    }

    #[test]
    fn writer_output_parses_back() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.set_epoch(Duration::from_secs(1_700_000_000));
        w.write_frame(Instant::from_micros(1_500_001), &[1, 2, 3]).unwrap();
        let big = vec![9u8; 70_000];
        w.write_frame(Instant::from_secs(2), &big).unwrap();
        let bytes = w.get_ref().clone();
        assert_eq!(bytes[..4], [0xd4, 0xc3, 0xb2, 0xa1]);

        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert_eq!(r.link_type(), LINKTYPE_ETHERNET);
        let a = r.next_record().unwrap().unwrap();
        assert_eq!(a.ts, Instant::from_micros(1_700_000_001_500_001));
        assert_eq!(a.data, [1, 2, 3]);
        let b = r.next_record().unwrap().unwrap();
        assert_eq!((b.data.len(), b.orig_len), (65535, 70_000));
        assert!(r.next_record().unwrap().is_none());
        assert!(PcapReader::new(&b"not a pcap file at all!!"[..]).is_err());
    }

    #[test]
    fn device_capture_read_by_tcpdump_and_rust() {
        let file = TempFile::new("wrap");
        let (a, mut b) = MemoryLink::pair(LinkConfig::default(), 1);
        let mut a = PcapDevice::create(a, &file.0).unwrap();

        // Transmit at 5 ms (explicit clock), receive at 7 ms, transmit again.
        a.set_now(Instant::from_millis(5));
        send(&mut a, &arp_request([10, 0, 0, 2], [10, 0, 0, 1]));
        send(&mut b, &arp_request([10, 0, 0, 1], [10, 0, 0, 2]));
        {
            let (mut rx, _) = a.queues();
            let (frame, _) = rx.recv(Instant::from_millis(7)).unwrap();
            assert_eq!(frame.len(), 42);
            assert!(rx.recv(Instant::from_millis(7)).is_none());
        }
        send(&mut a, &arp_request([10, 0, 0, 2], [10, 0, 0, 3]));
        // Refused sends are not captured.
        let (_, mut tx) = a.queues();
        assert!(tx.send(5000, TxMeta::default(), |_| unreachable!()).is_ok());
        assert_eq!(a.capture_errors(), 0);
        drop(a); // flushes

        let records: Vec<PcapRecord> =
            PcapReader::new(File::open(&file.0).unwrap()).unwrap().map(Result::unwrap).collect();
        let ts: Vec<u64> = records.iter().map(|r| r.ts.total_micros()).collect();
        assert_eq!(ts, [5_000, 7_000, 7_000]);
        assert_eq!(records[0].data, arp_request([10, 0, 0, 2], [10, 0, 0, 1]));
        assert_eq!(records[1].data, arp_request([10, 0, 0, 1], [10, 0, 0, 2]));

        let out = match Command::new("tcpdump").arg("-r").arg(&file.0).args(["-nn", "-tt"]).output() {
            Ok(out) => out,
            Err(e) => {
                eprintln!("tcpdump not runnable ({e}); checked the capture in Rust only");
                return;
            }
        };
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("0.005000 ARP, Request who-has 10.0.0.1 tell 10.0.0.2"), "{text}");
        assert!(lines[1].contains("who-has 10.0.0.2 tell 10.0.0.1"), "{text}");
        assert!(lines[2].starts_with("0.007000 ARP, Request who-has 10.0.0.3"), "{text}");
    }

    #[test]
    fn write_errors_are_counted_not_fatal() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        // The header goes to a working writer; records then fail.
        let mut writer = PcapWriter::new(Broken);
        assert!(writer.is_err());
        writer = Ok(PcapWriter { out: Broken, epoch_micros: 0 });
        let (a, mut b) = MemoryLink::pair(LinkConfig::default(), 1);
        let mut a = PcapDevice::new(a, writer.unwrap());
        send(&mut a, &[0u8; 60]);
        send(&mut a, &[0u8; 60]);
        assert_eq!(a.capture_errors(), 2);
        assert_eq!(a.take_error().unwrap().to_string(), "disk full");
        assert!(a.take_error().is_none());
        // Traffic was not disturbed.
        let (rx, _) = b.queues();
        assert!(rx.recv(Instant::ZERO).is_some());
        assert!(rx.recv(Instant::ZERO).is_some());
    }
}
