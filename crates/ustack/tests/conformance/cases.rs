//! The cases. Each expectation here holds against the Linux kernel (the
//! harness checks that on every run); where ustack answers differently the
//! case is listed in docs/conformance-differences.md with the reason.

use super::script::*;
use super::wire::{ACK, FIN, PSH, RST, SYN, URG};

use Step::{Expect, Handshake, Nothing};

fn tcp(s: Seg) -> Step {
    Step::Tcp(s)
}

fn want(w: WantTcp) -> Step {
    Expect(Want::Tcp(w))
}

/// A SYN to the listener with these raw option bytes.
fn syn_with(opts: &[u8]) -> Step {
    tcp(Seg { opts: Opts::Raw(opts.to_vec()), ..syn() })
}

/// IP option Record Route with room for nine addresses, none recorded yet.
fn record_route() -> Vec<u8> {
    let mut o = vec![7, 39, 4];
    o.resize(39, 0);
    o
}

pub fn all() -> Vec<Case> {
    vec![
        // ------------------------------------------------ CLOSED / LISTEN
        Case {
            name: "tcp_syn_closed_port",
            why: "RFC 9293 3.10.7.1: a SYN to a closed port gets RST|ACK, seq 0, ack SEG.SEQ+1",
            steps: vec![tcp(Seg { to: Port::Closed, ..syn() }), want(want_rst_ack())],
        },
        Case {
            name: "tcp_ack_closed_port",
            why: "RFC 9293 3.10.7.1: a segment with ACK to a closed port gets RST with seq = SEG.ACK",
            steps: vec![tcp(Seg { to: Port::Closed, ack: Seq::Abs(777), ..ack() }), want(WantTcp { seq: Check::Abs(777), ..want_rst() })],
        },
        Case {
            name: "tcp_data_no_ack_closed_port",
            why: "RFC 9293 3.10.7.1: data without ACK to a closed port gets RST|ACK acknowledging SEG.SEQ+SEG.LEN",
            steps: vec![tcp(Seg { to: Port::Closed, flags: PSH, ack: Seq::Abs(0), ..data(10) }), want(want_rst_ack())],
        },
        Case {
            name: "tcp_rst_closed_port",
            why: "RFC 9293 3.10.7.1: an incoming RST to a closed port is discarded",
            steps: vec![tcp(Seg { to: Port::Closed, ..rst() }), Nothing],
        },
        Case {
            name: "tcp_syn_listen_options",
            why: "RFC 9293 3.10.7.2, RFC 7323, RFC 2018: SYN-ACK acknowledges the SYN and answers MSS, SACK permitted, timestamps (echoing TSval) and window scale",
            steps: vec![tcp(syn()), want(WantTcp { has: vec![2, 4, 8, 3], echo_ts: true, ..want_syn_ack() })],
        },
        Case {
            name: "tcp_syn_listen_no_options",
            why: "RFC 7323 / RFC 2018: options the SYN did not offer are not in the SYN-ACK (MSS still is)",
            steps: vec![syn_with(&[]), want(WantTcp { has: vec![2], lacks: vec![3, 4, 8], ..want_syn_ack() })],
        },
        Case {
            name: "tcp_ack_to_listen",
            why: "RFC 9293 3.10.7.2: an ACK in LISTEN gets RST with seq = SEG.ACK",
            steps: vec![tcp(Seg { ack: Seq::Abs(4242), ..ack() }), want(WantTcp { seq: Check::Abs(4242), ..want_rst() })],
        },
        Case {
            name: "tcp_rst_to_listen",
            why: "RFC 9293 3.10.7.2: a RST in LISTEN is ignored",
            steps: vec![tcp(rst()), Nothing],
        },
        Case {
            name: "tcp_fin_to_listen",
            why: "RFC 9293 3.10.7.2: neither SYN, ACK nor RST in LISTEN: drop",
            steps: vec![tcp(Seg { flags: FIN, ack: Seq::Abs(0), ..ack() }), Nothing],
        },
        Case {
            name: "tcp_synfin_to_listen",
            why: "Linux drops SYN|FIN in LISTEN (no connection from a scanner's probe)",
            steps: vec![tcp(Seg { flags: SYN | FIN, ..syn() }), Nothing],
        },
        Case {
            name: "tcp_xmas_closed_port",
            why: "RFC 9293 3.10.7.1: FIN|PSH|URG without ACK to a closed port gets RST|ACK acknowledging the FIN",
            steps: vec![tcp(Seg { to: Port::Closed, flags: FIN | PSH | URG, ack: Seq::Abs(0), ..data(0) }), want(want_rst_ack())],
        },
        Case {
            name: "tcp_syn_data_closed_port",
            why: "RFC 9293 3.10.7.1: a SYN with data to a closed port gets RST|ACK acknowledging SYN and data",
            steps: vec![tcp(Seg { to: Port::Closed, len: 20, ..syn() }), want(want_rst_ack())],
        },
        Case {
            name: "tcp_synack_to_listen",
            why: "RFC 9293 3.10.7.2: a SYN|ACK in LISTEN is an ACK: RST with seq = SEG.ACK",
            steps: vec![tcp(Seg { flags: SYN | ACK, ack: Seq::Abs(99), ..syn() }), want(WantTcp { seq: Check::Abs(99), ..want_rst() })],
        },
        Case {
            name: "tcp_null_to_listen",
            why: "RFC 9293 3.10.7.2: a segment with no flags in LISTEN is dropped",
            steps: vec![tcp(Seg { flags: 0, ack: Seq::Abs(0), ..data(0) }), Nothing],
        },
        Case {
            name: "tcp_syn_bad_checksum",
            why: "RFC 9293 3.1: a segment with a bad checksum is discarded",
            steps: vec![tcp(Seg { fault: Fault::BadChecksum, ..syn() }), Nothing],
        },
        Case {
            name: "tcp_syn_short_data_offset",
            why: "RFC 9293 3.1: a data offset below 5 words is malformed: discarded",
            steps: vec![tcp(Seg { opts: Opts::None, fault: Fault::ShortDataOffset, ..syn() }), Nothing],
        },
        Case {
            name: "tcp_syn_to_broadcast",
            why: "RFC 1122 4.2.3.10: a SYN to a broadcast address is discarded",
            steps: vec![tcp(Seg { fault: Fault::Broadcast, ..syn() }), Nothing],
        },
        Case {
            name: "tcp_syn_fragmented",
            why: "RFC 791: a SYN in two IP fragments is reassembled and answered",
            steps: vec![tcp(Seg { fault: Fault::Fragmented, len: 40, ..syn() }), want(WantTcp { ack: Check::Ours(-40), ..want_syn_ack() })],
        },
        // ------------------------------------------------ option parsing
        Case {
            name: "tcp_opt_unknown_kind",
            why: "RFC 9293 3.1: unknown options are skipped by their length; the options after are still read",
            steps: vec![
                syn_with(&[0xfd, 4, 0, 0, 2, 4, 0x05, 0xb4, 4, 2, 1, 1, 1, 3, 3, 7]),
                want(WantTcp { has: vec![2, 4, 3], lacks: vec![8], ..want_syn_ack() }),
            ],
        },
        Case {
            name: "tcp_opt_eol_padding",
            why: "RFC 9293 3.1: EOL ends the list; what follows is padding, not options",
            steps: vec![syn_with(&[2, 4, 0x05, 0xb4, 0, 4, 2, 0]), want(WantTcp { has: vec![2], lacks: vec![4], ..want_syn_ack() })],
        },
        Case {
            name: "tcp_opt_mss_bad_length",
            why: "Linux: an MSS option whose length is not 4 is ignored and the SYN answered",
            steps: vec![syn_with(&[2, 3, 5, 1, 1, 1, 1, 1]), want(want_syn_ack())],
        },
        Case {
            name: "tcp_opt_ws_bad_length",
            why: "Linux: a window-scale option whose length is not 3 is ignored and the SYN answered (without WS)",
            steps: vec![syn_with(&[2, 4, 0x05, 0xb4, 3, 4, 7, 0]), want(WantTcp { lacks: vec![3], ..want_syn_ack() })],
        },
        Case {
            name: "tcp_opt_length_zero",
            why: "Linux: an option length below 2 ends parsing (the loop always ends); the SYN is answered with what was read before",
            steps: vec![syn_with(&[2, 4, 0x05, 0xb4, 0xfd, 0, 4, 2]), want(WantTcp { lacks: vec![4], ..want_syn_ack() })],
        },
        Case {
            name: "tcp_opt_length_past_end",
            why: "Linux: an option running past the header ends parsing; the SYN is answered",
            steps: vec![syn_with(&[2, 4, 0x05, 0xb4, 1, 1, 4, 9]), want(WantTcp { lacks: vec![4], ..want_syn_ack() })],
        },
        Case {
            name: "tcp_opt_ws_too_large",
            why: "RFC 7323 2.3: a shift above 14 is used as 14; the SYN is answered with window scale",
            steps: vec![syn_with(&[2, 4, 0x05, 0xb4, 1, 3, 3, 15]), want(WantTcp { has: vec![3], ..want_syn_ack() })],
        },
        Case {
            name: "tcp_opt_mss_zero",
            why: "Linux ignores an MSS of 0 and answers the SYN",
            steps: vec![syn_with(&[2, 4, 0, 0]), want(WantTcp { has: vec![2], ..want_syn_ack() })],
        },
        Case {
            name: "tcp_opt_ts_bad_length",
            why: "Linux: a timestamp option whose length is not 10 is ignored: the SYN-ACK carries no timestamps",
            steps: vec![syn_with(&[2, 4, 0x05, 0xb4, 8, 6, 0, 0, 0, 1]), want(WantTcp { lacks: vec![8], ..want_syn_ack() })],
        },
        Case {
            name: "tcp_opt_sackok_bad_length",
            why: "Linux: SACK permitted with a length other than 2 is ignored: the SYN-ACK does not offer SACK",
            steps: vec![syn_with(&[2, 4, 0x05, 0xb4, 4, 3, 0, 1]), want(WantTcp { lacks: vec![4], ..want_syn_ack() })],
        },
        Case {
            name: "tcp_opt_all_nops",
            why: "RFC 9293 3.1: 40 bytes of NOP are a valid (empty) option list",
            steps: vec![syn_with(&[1; 40]), want(WantTcp { lacks: vec![3, 4, 8], ..want_syn_ack() })],
        },
        // ------------------------------------------------ SYN-RECEIVED
        Case {
            name: "tcp_synrecv_rst_exact",
            why: "RFC 9293 3.10.7.4: a RST at RCV.NXT in SYN-RECEIVED (passive open) ends the connection: a later ACK gets RST",
            steps: vec![tcp(syn()), want(want_syn_ack()), tcp(rst()), Nothing, tcp(ack()), want(want_rst())],
        },
        Case {
            name: "tcp_synrecv_ack_with_data",
            why: "RFC 9293 3.10.7.4: an ACK with data completes the handshake and the data is acknowledged",
            steps: vec![tcp(syn()), want(want_syn_ack()), tcp(data(20)), want(want_ack())],
        },
        // ------------------------------------------------ ESTABLISHED
        Case {
            name: "tcp_est_syn_out_of_window",
            why: "RFC 5961 4.2: a SYN in a synchronized state gets a challenge ACK whatever its sequence number",
            steps: vec![Handshake, tcp(Seg { seq: Seq::Ours(1 << 30), opts: Opts::Auto, advance: false, ..syn() }), want(want_ack())],
        },
        Case {
            name: "tcp_est_rst_ack_in_window",
            why: "RFC 5961 3.2: RST|ACK inside the window but not at RCV.NXT gets a challenge ACK",
            steps: vec![Handshake, tcp(Seg { flags: RST | ACK, seq: Seq::Ours(1000), ack: Seq::Theirs(0), ..rst() }), want(want_ack())],
        },
        Case {
            name: "tcp_est_rst_old_timestamp",
            why: "RFC 7323 5.3 / Linux: PAWS does not apply to RST: a RST at RCV.NXT with an old TSval still resets",
            steps: vec![Handshake, tcp(Seg { opts: Opts::OldTs, ..rst() }), Nothing, tcp(data(10)), want(want_rst())],
        },
        Case {
            name: "tcp_est_data_bad_checksum",
            why: "RFC 9293 3.1: data with a bad checksum is discarded silently (and not acknowledged)",
            steps: vec![Handshake, tcp(Seg { fault: Fault::BadChecksum, advance: false, ..data(10) }), Nothing],
        },
        Case {
            name: "tcp_est_keepalive_probe",
            why: "RFC 1122 4.2.3.6: a keep-alive probe (SEG.SEQ = RCV.NXT-1, no data) gets an ACK",
            steps: vec![Handshake, tcp(Seg { seq: Seq::Ours(-1), ..ack() }), want(want_ack())],
        },
        Case {
            name: "tcp_est_fin_with_data",
            why: "RFC 9293 3.10.7.4: data and FIN in one segment are both acknowledged",
            steps: vec![
                Handshake,
                tcp(Seg { flags: FIN | PSH | ACK, ..data(30) }),
                want(WantTcp { set: ACK, clear: SYN | RST, ..want_ack() }),
            ],
        },
        Case {
            name: "tcp_est_fin_out_of_order",
            why: "RFC 9293 3.10.7.4: a FIN beyond a hole is not acknowledged: a duplicate ACK (with SACK) says RCV.NXT",
            steps: vec![
                Handshake,
                tcp(Seg { flags: FIN | PSH | ACK, seq: Seq::Ours(10), advance: false, ..data(10) }),
                want(WantTcp { has: vec![5], ..want_ack() }),
            ],
        },
        Case {
            name: "tcp_est_fin_out_of_window",
            why: "RFC 9293 3.10.7.4: a FIN outside the window is unacceptable: ACK, drop",
            steps: vec![Handshake, tcp(Seg { flags: FIN | ACK, seq: Seq::Ours(1 << 28), advance: false, ..data(0) }), want(want_ack())],
        },
        Case {
            name: "tcp_est_data_acked",
            why: "RFC 9293 3.10.7.4: in-order data is acknowledged; RFC 7323 3.2: the ACK echoes its TSval",
            steps: vec![Handshake, tcp(data(100)), want(WantTcp { echo_ts: true, ..want_ack() })],
        },
        Case {
            name: "tcp_est_rst_exact",
            why: "RFC 5961 3.2: a RST at exactly RCV.NXT resets the connection (nothing sent; a later segment gets RST)",
            steps: vec![Handshake, tcp(rst()), Nothing, tcp(data(10)), want(want_rst())],
        },
        Case {
            name: "tcp_est_rst_in_window",
            why: "RFC 5961 3.2: a RST inside the window but not at RCV.NXT gets a challenge ACK",
            steps: vec![Handshake, tcp(Seg { seq: Seq::Ours(1000), ..rst() }), want(want_ack())],
        },
        Case {
            name: "tcp_est_rst_out_of_window",
            why: "RFC 5961 3.2 / RFC 9293: a RST outside the window is dropped silently",
            steps: vec![Handshake, tcp(Seg { seq: Seq::Ours(1 << 30), ..rst() }), Nothing],
        },
        Case {
            name: "tcp_est_syn",
            why: "RFC 5961 4.2: a SYN in a synchronized state gets a challenge ACK",
            steps: vec![Handshake, tcp(Seg { seq: Seq::Ours(500), opts: Opts::Auto, advance: false, ..syn() }), want(want_ack())],
        },
        Case {
            name: "tcp_est_syn_no_timestamp",
            why: "RFC 5961 4.2: a SYN without timestamps in ESTABLISHED also gets a challenge ACK (RFC 7323's drop-without-TS rule is for non-SYN segments)",
            steps: vec![Handshake, tcp(Seg { seq: Seq::Ours(500), opts: Opts::None, advance: false, ..syn() }), want(want_ack())],
        },
        Case {
            name: "tcp_est_data_beyond_window",
            why: "RFC 9293 3.10.7.4: an unacceptable segment (beyond the window) gets an ACK and is dropped",
            steps: vec![Handshake, tcp(Seg { seq: Seq::Ours(1 << 28), advance: false, ..data(10) }), want(want_ack())],
        },
        Case {
            name: "tcp_est_data_old",
            why: "RFC 9293 3.10.7.4: an old duplicate (entirely below RCV.NXT) gets an ACK",
            steps: vec![Handshake, tcp(Seg { seq: Seq::Ours(-100), advance: false, ..data(10) }), want(want_ack())],
        },
        Case {
            name: "tcp_est_paws_old_tsval",
            why: "RFC 7323 5.3: a segment whose TSval is older than TS.Recent is dropped (PAWS) with an ACK; its data is not acknowledged",
            steps: vec![Handshake, tcp(Seg { opts: Opts::OldTs, advance: false, ..data(10) }), want(want_ack())],
        },
        Case {
            name: "tcp_est_fin",
            why: "RFC 9293 3.10.7.4: a FIN is acknowledged (CLOSE-WAIT); the service closes, so its FIN follows (LAST-ACK); after our ACK the connection is gone (a segment gets RST)",
            steps: vec![
                Handshake,
                tcp(Seg { flags: FIN | ACK, len: 0, ..data(0) }),
                want(WantTcp { set: ACK, clear: SYN | RST, ack: Check::Ours(0), seq: Check::Theirs(0), ..want_ack() }),
                Step::AwaitFin,
                tcp(ack()),
                Nothing,
                tcp(Seg { advance: false, ..data(10) }),
                want(want_rst()),
            ],
        },
        Case {
            name: "tcp_est_data_no_timestamp",
            why: "RFC 7323 3.2: a non-SYN segment without a timestamp on a connection that negotiated them SHOULD be dropped; Linux accepts and acknowledges it",
            steps: vec![Handshake, tcp(Seg { opts: Opts::None, ..data(10) }), want(want_ack())],
        },
        Case {
            name: "tcp_est_data_no_ack_flag",
            why: "RFC 9293 3.10.7.4 fifth check: a segment without ACK in a synchronized state is dropped",
            steps: vec![Handshake, tcp(Seg { flags: PSH, advance: false, ..data(10) }), Nothing],
        },
        Case {
            name: "tcp_est_rst_ack_exact",
            why: "RFC 5961 3.2: RST|ACK at exactly RCV.NXT resets the connection too",
            steps: vec![Handshake, tcp(Seg { flags: RST | ACK, ack: Seq::Theirs(0), ..rst() }), Nothing, tcp(data(10)), want(want_rst())],
        },
        Case {
            name: "tcp_est_ack_unsent_data",
            why: "RFC 9293 3.10.7.4: an ACK for data never sent (SEG.ACK > SND.NXT) gets an ACK and is dropped",
            steps: vec![Handshake, tcp(Seg { ack: Seq::Theirs(100_000), ..ack() }), want(want_ack())],
        },
        Case {
            name: "tcp_est_ack_too_old",
            why: "RFC 5961 5.2: an ACK below SND.UNA - MAX.SND.WND gets a challenge ACK and the segment (its data too) is dropped",
            steps: vec![Handshake, tcp(Seg { ack: Seq::Theirs(-(1 << 30)), ..data(10) }), want(WantTcp { ack: Check::Ours(-10), ..want_ack() })],
        },
        Case {
            name: "tcp_est_out_of_order_sack",
            why: "RFC 9293 3.10.7.4 / RFC 2018: data beyond RCV.NXT inside the window gets an immediate duplicate ACK with a SACK block",
            steps: vec![
                Handshake,
                tcp(Seg { seq: Seq::Ours(100), advance: false, ..data(50) }),
                want(WantTcp { has: vec![5], ..want_ack() }),
                tcp(data(100)),
                want(WantTcp { ack: Check::Ours(50), lacks: vec![5], ..want_ack() }),
            ],
        },
        Case {
            name: "tcp_est_partial_overlap",
            why: "RFC 9293 3.3.5: a segment that starts below RCV.NXT and ends beyond it is trimmed and its new part acknowledged",
            steps: vec![Handshake, tcp(data(10)), want(want_ack()), tcp(Seg { seq: Seq::Ours(-5), ..data(10) }), want(want_ack())],
        },
        Case {
            name: "tcp_est_duplicate_dsack",
            why: "RFC 2883 4: a duplicate of data already acknowledged gets an immediate ACK whose first SACK block reports it (D-SACK); the next ACK no longer does",
            steps: vec![
                Handshake,
                tcp(data(10)),
                want(want_ack()),
                tcp(Seg { seq: Seq::Ours(-10), advance: false, ..data(10) }),
                want(WantTcp { has: vec![5], ..want_ack() }),
                tcp(data(10)),
                want(WantTcp { lacks: vec![5], ..want_ack() }),
            ],
        },
        Case {
            name: "tcp_syn_with_data",
            why: "RFC 9293 3.10.7.2: data on a SYN (no TFO cookie) is not acknowledged by the SYN-ACK",
            steps: vec![tcp(Seg { len: 10, ..syn() }), want(WantTcp { ack: Check::Ours(-10), ..want_syn_ack() })],
        },
        Case {
            name: "tcp_synrecv_syn_retransmitted",
            why: "RFC 9293 3.10.7.4: in SYN-RECEIVED a retransmitted SYN gets the SYN-ACK again",
            steps: vec![
                tcp(syn()),
                want(want_syn_ack()),
                tcp(Seg { seq: Seq::Ours(-1), advance: false, ..syn() }),
                want(WantTcp { seq: Check::Theirs(-1), ..want_syn_ack() }),
            ],
        },
        Case {
            name: "tcp_synrecv_bad_ack",
            why: "RFC 9293 3.10.7.4: in SYN-RECEIVED an unacceptable ACK gets RST with seq = SEG.ACK",
            steps: vec![tcp(syn()), want(want_syn_ack()), tcp(Seg { ack: Seq::Theirs(1000), ..ack() }), want(WantTcp { seq: Check::Theirs(1000), ..want_rst() })],
        },
        Case {
            name: "tcp_est_challenge_ack_rate_limited",
            why: "RFC 5961 7: challenge ACKs are throttled; Linux sends at most one per connection per 500 ms (tcp_invalid_ratelimit), so the second in-window RST right after the first gets nothing",
            steps: vec![
                Handshake,
                tcp(Seg { seq: Seq::Ours(1000), ..rst() }),
                want(want_ack()),
                tcp(Seg { seq: Seq::Ours(2000), ..rst() }),
                Nothing,
            ],
        },
        Case {
            name: "tcp_est_dup_ack_rate_limited",
            why: "Linux throttles the ACKs it sends for out-of-window segments without data (one per 500 ms per connection, against ACK loops): the second gets nothing",
            steps: vec![
                Handshake,
                tcp(Seg { seq: Seq::Ours(1 << 28), ..ack() }),
                want(want_ack()),
                tcp(Seg { seq: Seq::Ours(1 << 28), ..ack() }),
                Nothing,
            ],
        },
        Case {
            name: "tcp_est_data_dup_ack_not_limited",
            why: "Linux does not throttle the ACKs for out-of-window data (data is no ACK loop): each gets its ACK",
            steps: vec![
                Handshake,
                tcp(Seg { seq: Seq::Ours(1 << 28), advance: false, ..data(10) }),
                want(want_ack()),
                tcp(Seg { seq: Seq::Ours(1 << 28), advance: false, ..data(10) }),
                want(want_ack()),
            ],
        },
        Case {
            name: "tcp_est_bogus_sack",
            why: "RFC 2018: SACK blocks for data never sent are ignored; a pure ACK carrying them gets no answer",
            steps: vec![
                Handshake,
                tcp(Seg { opts: Opts::Raw(vec![1, 1, 5, 10, 0x7f, 0, 0, 0, 0x7f, 0, 0x10, 0]), ..ack() }),
                Nothing,
            ],
        },
        Case {
            name: "tcp_synrst_to_listen",
            why: "RFC 9293 3.10.7.2: in LISTEN the RST check comes first: SYN|RST is ignored",
            steps: vec![tcp(Seg { flags: SYN | RST, ..syn() }), Nothing],
        },
        // ------------------------------------------------ active close
        Case {
            name: "tcp_closing",
            why: "RFC 9293 3.10.7.4: a FIN in FIN-WAIT-1 (simultaneous close) is acknowledged (CLOSING); the ACK of the device's FIN then ends in TIME-WAIT, where a retransmitted FIN is acknowledged",
            steps: vec![
                Step::HttpGet,
                Step::ReadToFinAckData,
                tcp(Seg { flags: FIN | ACK, ack: Seq::Theirs(-1), ..data(0) }),
                want(want_ack()),
                tcp(ack()),
                tcp(Seg { flags: FIN | ACK, seq: Seq::Ours(-1), advance: false, ..data(0) }),
                want(want_ack()),
            ],
        },
        Case {
            name: "tcp_fin_wait_2_data",
            why: "RFC 9293 3.10.7.4: FIN-WAIT-2 still receives: data after the device's half-close is acknowledged (the server reads to the peer's FIN)",
            steps: vec![Step::HttpGet, Step::ReadToFin, tcp(data(10)), want(want_ack())],
        },
        Case {
            name: "tcp_fin_wait_2_rst",
            why: "RFC 5961 3.2: a RST at RCV.NXT in FIN-WAIT-2 ends the connection silently; a later segment gets RST",
            steps: vec![Step::HttpGet, Step::ReadToFin, tcp(rst()), Nothing, tcp(data(10)), want(want_rst())],
        },
        Case {
            name: "tcp_fin_wait_2_fin",
            why: "RFC 9293 3.10.7.4: the peer's FIN in FIN-WAIT-2 is acknowledged (TIME-WAIT)",
            steps: vec![Step::HttpGet, Step::ReadToFin, tcp(Seg { flags: FIN | ACK, ..data(0) }), want(want_ack())],
        },
        Case {
            name: "tcp_time_wait_fin_again",
            why: "RFC 9293 3.10.7.4 TIME-WAIT: a retransmitted FIN is acknowledged again",
            steps: vec![
                Step::HttpGet,
                Step::ReadToFin,
                tcp(Seg { flags: FIN | ACK, ..data(0) }),
                want(want_ack()),
                tcp(Seg { flags: FIN | ACK, seq: Seq::Ours(-1), advance: false, ..data(0) }),
                want(want_ack()),
            ],
        },
        Case {
            name: "tcp_time_wait_data",
            why: "RFC 9293 3.10.7.4 TIME-WAIT: any other segment is acknowledged (nothing can be new)",
            steps: vec![
                Step::HttpGet,
                Step::ReadToFin,
                tcp(Seg { flags: FIN | ACK, ..data(0) }),
                want(want_ack()),
                tcp(Seg { advance: false, ..data(10) }),
                want(want_ack()),
            ],
        },
        Case {
            name: "tcp_time_wait_syn_new",
            why: "RFC 6191 / RFC 1122 4.2.2.13: a SYN above RCV.NXT with a newer timestamp reopens a connection in TIME-WAIT: SYN-ACK, its ISN above the old connection's sequence space (Linux: old SND.NXT + 65537)",
            steps: vec![
                Step::HttpGet,
                Step::ReadToFin,
                tcp(Seg { flags: FIN | ACK, ..data(0) }),
                want(want_ack()),
                tcp(Seg { seq: Seq::Ours(100_000), ..syn() }),
                want(WantTcp { seq: Check::AfterTheirs, ..want_syn_ack() }),
            ],
        },
        // ------------------------------------------------ ICMP
        Case {
            name: "icmp_echo",
            why: "RFC 792 / RFC 1122 3.2.2.6: an echo request is answered with the same identifier, sequence and data",
            steps: vec![Step::Icmp(echo()), Expect(Want::Icmp(want_echo_reply()))],
        },
        Case {
            name: "icmp_echo_nonzero_code",
            why: "RFC 792 gives echo code 0, but Linux answers any code, copying it into the reply",
            steps: vec![Step::Icmp(IcmpOut { code: 5, ..echo() }), Expect(Want::Icmp(WantIcmp { code: 5, ..want_echo_reply() }))],
        },
        Case {
            name: "icmp_echo_record_route",
            why: "RFC 791 / RFC 1122 3.2.2.6: an echo reply carries the request's Record Route option back (Linux records its address in it)",
            steps: vec![
                Step::Icmp(IcmpOut { ip_opts: record_route(), ..echo() }),
                Expect(Want::Icmp(WantIcmp { ip_opts: Some(true), ..want_echo_reply() })),
            ],
        },
        Case {
            name: "ip_bad_option_length",
            why: "RFC 1122 3.2.2.5: a datagram with a malformed IP option (length 1) gets parameter problem pointing at the option (offset 20)",
            steps: vec![
                Step::Icmp(IcmpOut { ip_opts: vec![7, 1, 0, 0], ..echo() }),
                Expect(Want::Icmp(WantIcmp { ty: 12, code: 0, echo: false, quote: true, ip_opts: None, rest: Some([20, 0, 0, 0]) })),
            ],
        },
        Case {
            name: "ip_nop_options_echo",
            why: "RFC 791: NOP options are valid; the echo is answered (Linux copies only RR/TS/source-route options into the reply)",
            steps: vec![Step::Icmp(IcmpOut { ip_opts: vec![1, 1, 1, 1], ..echo() }), Expect(Want::Icmp(want_echo_reply()))],
        },
        Case {
            name: "ip_source_route_echo",
            why: "RFC 7126 / Linux accept_source_route=0: a datagram with loose source routing is dropped",
            steps: vec![
                Step::Icmp(IcmpOut { ip_opts: vec![1, 131, 7, 4, 10, 96, 0, 2], ..echo() }),
                Nothing,
            ],
        },
        Case {
            name: "ip_ttl_zero_echo",
            why: "RFC 1122 3.2.1.7: TTL matters only to forwarding; a datagram for us with TTL 0 is delivered and answered",
            steps: vec![Step::Icmp(IcmpOut { fault: Fault::TtlZero, ..echo() }), Expect(Want::Icmp(want_echo_reply()))],
        },
        Case {
            name: "icmp_echo_bad_checksum",
            why: "RFC 1122 3.2.2: an ICMP message with a bad checksum is discarded",
            steps: vec![Step::Icmp(IcmpOut { fault: Fault::BadChecksum, ..echo() }), Nothing],
        },
        Case {
            name: "icmp_timestamp_request",
            why: "RFC 792 timestamp request (type 13): Linux answers with a timestamp reply",
            steps: vec![
                Step::Icmp(IcmpOut { ty: 13, payload: 12, ..echo() }),
                Expect(Want::Icmp(WantIcmp { ty: 14, code: 0, echo: false, quote: false, ip_opts: None, rest: None })),
            ],
        },
        Case {
            name: "icmp_echo_large",
            why: "RFC 1122 3.2.2.6: an echo of 1472 data bytes (a full 1500-byte datagram) is answered whole",
            steps: vec![Step::Icmp(IcmpOut { payload: 1472, ..echo() }), Expect(Want::Icmp(want_echo_reply()))],
        },
        Case {
            name: "icmp_echo_fragmented",
            why: "RFC 791 / RFC 1122 3.3.2: an echo request in two fragments is reassembled and answered",
            steps: vec![Step::Icmp(IcmpOut { fault: Fault::Fragmented, ..echo() }), Expect(Want::Icmp(want_echo_reply()))],
        },
        Case {
            name: "ip_bad_header_checksum",
            why: "RFC 1122 3.2.1.2: a datagram with a bad header checksum is discarded silently",
            steps: vec![Step::Icmp(IcmpOut { fault: Fault::BadIpChecksum, ..echo() }), Nothing],
        },
        Case {
            name: "ip_total_length_past_frame",
            why: "RFC 791: a total length beyond the frame means a truncated datagram: discarded",
            steps: vec![Step::Icmp(IcmpOut { fault: Fault::LongTotalLength, ..echo() }), Nothing],
        },
        Case {
            name: "icmp_unsolicited_echo_reply",
            why: "RFC 792: an echo reply nobody asked for is discarded",
            steps: vec![Step::Icmp(IcmpOut { ty: 0, ..echo() }), Nothing],
        },
        Case {
            name: "icmp_unsolicited_unreachable",
            why: "RFC 1122 3.2.2: an ICMP error about nothing we sent is discarded, never answered",
            steps: vec![Step::Icmp(IcmpOut { ty: 3, code: 3, ..echo() }), Nothing],
        },
        Case {
            name: "udp_closed_port_bad_checksum",
            why: "RFC 1122 4.1.3.4: a UDP datagram with a bad checksum is discarded silently (no port unreachable)",
            steps: vec![Step::Udp(UdpOut { to: Port::Closed, len: 20, fault: Fault::BadChecksum }), Nothing],
        },
        Case {
            name: "udp_closed_port_zero_checksum",
            why: "RFC 768: checksum 0 means none; the datagram counts and gets port unreachable",
            steps: vec![
                Step::Udp(UdpOut { to: Port::Closed, len: 20, fault: Fault::ZeroChecksum }),
                Expect(Want::Icmp(WantIcmp { ty: 3, code: 3, echo: false, quote: true, ip_opts: None, rest: None })),
            ],
        },
        Case {
            name: "udp_broadcast_closed_port",
            why: "RFC 1122 3.2.2: no ICMP error about a datagram sent to a broadcast address",
            steps: vec![Step::Udp(UdpOut { to: Port::Closed, len: 20, fault: Fault::Broadcast }), Nothing],
        },
        Case {
            name: "icmp_echo_broadcast",
            why: "RFC 1122 3.2.2.6 allows silence; Linux ignores broadcast echo (icmp_echo_ignore_broadcasts)",
            steps: vec![Step::Icmp(IcmpOut { fault: Fault::Broadcast, ..echo() }), Nothing],
        },
        Case {
            name: "icmp_unknown_type",
            why: "RFC 1122 3.2.2: an unknown ICMP type is silently discarded",
            steps: vec![Step::Icmp(IcmpOut { ty: 42, ..echo() }), Nothing],
        },
        Case {
            name: "udp_closed_port_unreachable",
            why: "RFC 1122 4.1.3.1 / 3.2.2.1: UDP to a closed port gets port unreachable quoting the IP header and 8 bytes",
            steps: vec![
                Step::Udp(UdpOut { to: Port::Closed, len: 20, fault: Fault::None }),
                Expect(Want::Icmp(WantIcmp { ty: 3, code: 3, echo: false, quote: true, ip_opts: None, rest: None })),
            ],
        },
        // ------------------------------------------------ ARP
        Case {
            name: "arp_request_for_us",
            why: "RFC 826: a request for our address is answered to its sender",
            steps: vec![Step::Arp(ArpOut { op: 1, spa: None, tpa: None }), Expect(Want::Arp(WantArp))],
        },
        Case {
            name: "arp_request_for_other",
            why: "RFC 826: a request for another address is not answered",
            steps: vec![Step::Arp(ArpOut { op: 1, spa: None, tpa: Some([10, 96, 0, 77]) }), Nothing],
        },
        Case {
            name: "arp_unsolicited_reply",
            why: "RFC 826: a reply is never answered",
            steps: vec![Step::Arp(ArpOut { op: 2, spa: Some([10, 96, 0, 9]), tpa: None }), Nothing],
        },
        Case {
            name: "arp_probe_for_us",
            why: "RFC 5227 2.1.1: a probe (sender 0.0.0.0) for our address is answered, so the prober sees the conflict",
            steps: vec![Step::Arp(ArpOut { op: 1, spa: Some([0, 0, 0, 0]), tpa: None }), Expect(Want::Arp(WantArp))],
        },
        Case {
            name: "arp_gratuitous_request",
            why: "RFC 5227 / RFC 826: a gratuitous ARP (sender = target = its own address) is not answered",
            steps: vec![Step::Arp(ArpOut { op: 1, spa: Some([10, 96, 0, 9]), tpa: Some([10, 96, 0, 9]) }), Nothing],
        },
        Case {
            name: "arp_unknown_operation",
            why: "RFC 826: an operation other than request or reply is discarded",
            steps: vec![Step::Arp(ArpOut { op: 3, spa: None, tpa: None }), Nothing],
        },
        Case {
            name: "arp_request_off_subnet_sender",
            why: "RFC 826: the target is us, so the request is answered whatever the sender's subnet",
            steps: vec![Step::Arp(ArpOut { op: 1, spa: Some([192, 0, 2, 7]), tpa: None }), Expect(Want::Arp(WantArp))],
        },
    ]
}
