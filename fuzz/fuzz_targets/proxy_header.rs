//! The PROXY protocol header a TCP listener with `accept_proxy_protocol` reads first.
//!
//! Properties, for any bytes a client (or a balancer in front) may send:
//! - reading never panics, and a header it accepts ends within the bytes given and
//!   within the 4 KiB evenkeel reads at most;
//! - the bytes cut before a header's end are "wait for more", never a refusal or
//!   another header (so a header split over reads is read the same), and the bytes
//!   behind it are not part of it;
//! - a header evenkeel writes for the client it names reads back to that client.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use evenkeel::fuzzing::{parse_proxy_header, v2_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, length))) = parse_proxy_header(data) {
        assert!(length <= data.len() && length <= 4096);
        let whole = parse_proxy_header(&data[..length]).ok().flatten();
        assert_eq!(
            whole.map(|(_, l)| l),
            Some(length),
            "the header alone reads the same"
        );
        for cut in 0..length {
            assert!(
                matches!(parse_proxy_header(&data[..cut]), Ok(None)),
                "a cut at {cut} of a {length}-byte header is not 'wait'"
            );
        }
    }
    if data.len() >= 8 {
        let port = u16::from_be_bytes([data[0], data[1]]);
        let ip = IpAddr::V4(Ipv4Addr::new(data[2], data[3], data[4], data[5]));
        let client = SocketAddr::new(ip, port);
        let local = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            u16::from_be_bytes([data[6], data[7]]),
        );
        let mut header = v2_header(client, local);
        let length = header.len();
        header.extend_from_slice(&data[8..]);
        assert_eq!(
            parse_proxy_header(&header).ok().flatten(),
            Some((Some(client), length))
        );
    }
});
