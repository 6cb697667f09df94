//! Tests of the ring layout (`stream::ring`): order across wraps, the mailbox, partial
//! consumes, close, and the writer's choice of stores.

use super::*;

#[test]
fn bytes_arrive_in_order_across_wraps() {
    let block = HeapBlock::new(4096);
    let (mut w, _) = block.ends(4096, 0);
    let (_, mut r) = block.ends(4096, 1);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let t = std::thread::spawn(move || {
        let mut sent = 0;
        while sent < data.len() {
            sent += w.write(&data[sent..(sent + 1000).min(data.len())]).unwrap();
        }
        data
    });
    let mut got = Vec::new();
    while got.len() < 100_000 {
        let v = r.peek().unwrap();
        let n = v.len().min(777);
        got.extend_from_slice(&v[..n]);
        r.consume(n);
    }
    let (w, _) = block.ends(4096, 0);
    assert_eq!(got, t.join().unwrap());
    w.abort();
    assert!(r.peek().is_err());
}

#[test]
fn mailbox_alternates_slots_and_keeps_the_stream_apart() {
    let block = HeapBlock::new(4096);
    let (mut w, _) = block.ends(4096, 0);
    let (_, mut r) = block.ends(4096, 1);
    let mut out = [0u8; SLOT - 4];
    assert!(!r.poll(0, &mut out, SLOT - 4));
    for seq in 0..5u64 {
        let data: Vec<u8> = (0..MAILBOX_BYTES).map(|b| b as u8 ^ seq as u8).collect();
        w.post(seq, 7 + seq as u32, !seq, &data).unwrap();
        assert!(r.poll(seq, &mut out, SLOT - 4));
        assert!(!r.posted(seq + 1) && !r.posted(seq + 2));
        assert_eq!(out[..4], (7 + seq as u32).to_le_bytes());
        assert_eq!(out[4..12], (!seq).to_le_bytes());
        assert_eq!(out[12..], data[..]);
    }
    assert!(w.post(9, 0, 0, &[0; MAILBOX_BYTES + 1]).is_err());
    assert_eq!(r.pending(), Ok(false));
    w.write(&[1, 2, 3]).unwrap();
    assert_eq!(r.pending(), Ok(true));
    assert_eq!(seq_word(u64::from(u32::MAX - 1)), 1);
}

#[test]
fn a_reader_that_leaves_bytes_unconsumed_still_sees_new_ones() {
    // A reduction of 8-byte elements takes 8 of the 12 bytes in, leaves the other 4 (half
    // an element) and waits for the rest: the next peek must show what came since.
    let block = HeapBlock::new(4096);
    let (mut w, _) = block.ends(4096, 0);
    let (_, mut r) = block.ends(4096, 1);
    assert_eq!(w.write(&[1; 12]), Ok(12));
    assert_eq!(r.peek().map(<[u8]>::len), Ok(12));
    r.consume(8);
    assert_eq!(w.write(&[2; 4]), Ok(4));
    assert_eq!(r.peek(), Ok(&[1, 1, 1, 1, 2, 2, 2, 2][..]));
    r.consume(8);
    // Across the wrap: the view stops at the end of the ring, then goes on from its start.
    assert_eq!(w.write(&[3; 4072]), Ok(4072));
    assert_eq!(r.peek().map(<[u8]>::len), Ok(4072));
    r.consume(4064);
    assert_eq!(w.write(&[4; 20]), Ok(20));
    let mut to_end = vec![3; 8];
    to_end.extend([4; 8]);
    assert_eq!(r.peek(), Ok(&to_end[..]));
    r.consume(16);
    assert_eq!(r.peek(), Ok(&[4; 12][..]));
}

#[test]
fn a_close_still_delivers_what_was_written() {
    let block = HeapBlock::new(4096);
    let (mut w, _) = block.ends(4096, 0);
    let (_, mut r) = block.ends(4096, 1);
    assert_eq!(w.write(&[5; 10]), Ok(10));
    w.close();
    assert_eq!(r.peek().map(<[u8]>::len), Ok(10));
    r.consume(10);
    assert!(r.peek().is_err());
}

#[test]
fn an_auto_writer_tries_both_stores_and_every_byte_arrives() {
    let block = HeapBlock::new(1 << 16);
    let (mut w, _) = block.ends(1 << 16, 0);
    let (_, mut r) = block.ends(1 << 16, 1);
    w.set_ring_nt(RingNt::Auto);
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let t = std::thread::spawn(move || {
        let (mut sent, mut step) = (0, 1);
        while sent < data.len() {
            // Pieces of 1 B to ~20 KiB, most over NT_MIN_WRITE, from any alignment.
            step = (step * 7 + 13) % 20_011 + 1;
            sent += w.write(&data[sent..(sent + step).min(data.len())]).unwrap();
        }
        (w, data)
    });
    let mut got = Vec::new();
    while got.len() < 8 << 20 {
        let v = r.peek().unwrap();
        let n = v.len().min(30_000);
        got.extend_from_slice(&v[..n]);
        r.consume(n);
    }
    let (w, data) = t.join().unwrap();
    assert!(got == data, "the bytes arrived changed");
    // The reader measured and showed both kinds of stores (the writer tried the other one
    // once the first was measured).
    let shown = [false, true].map(|k| w.ring.consume_speed(k).load(Ordering::Relaxed));
    assert!(
        shown.iter().all(|&s| s > 0),
        "consume speeds shown {shown:?}"
    );
    let mode = w.ring.mode().load(Ordering::Relaxed);
    assert!(mode == MODE_AUTO_PLAIN || mode == MODE_AUTO_NT);
    // A fixed setting tells the reader there is nothing to measure.
    let mut w = w;
    w.set_ring_nt(RingNt::On);
    assert_eq!(w.ring.mode().load(Ordering::Relaxed), MODE_FIXED);
}
