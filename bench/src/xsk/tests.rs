use super::*;

#[test]
fn the_frame_is_valid_udp() {
    let f = udp_frame([2, 0, 0, 0, 0, 1], TESTBED_DUT_MAC, 60);
    assert_eq!(f.len(), 60);
    assert_eq!(&f[0..6], &TESTBED_DUT_MAC);
    // The IPv4 header sums to 0xffff with its checksum in place.
    let sum = f[14..34]
        .chunks(2)
        .fold(0u32, |s, w| s + u32::from(u16::from_be_bytes([w[0], w[1]])));
    assert_eq!((sum & 0xffff) + (sum >> 16), 0xffff);
    assert_eq!(u16::from_be_bytes([f[16], f[17]]), 46);
    assert_eq!(u16::from_be_bytes([f[38], f[39]]), 26);
    assert_eq!(&f[30..34], &DST.octets());
}

#[test]
fn macs_parse() {
    assert_eq!(parse_mac("02:00:c6:12:00:02"), Ok(TESTBED_DUT_MAC));
    assert!(parse_mac("02:00:c6:12:00").is_err());
    assert!(parse_mac("02:00:c6:12:00:02:03").is_err());
}
