use super::*;

/// `compare` and the tests read these names, in this order.
#[test]
fn the_json_report_keeps_its_fields_in_order() {
    let mut r = Report::default();
    r.run.interrupted = true;
    r.run.xdp_mode = "native".into();
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"target":"","proto":"","conns":0,"pipeline":0,"secs":0.0,"warmup":0.0,"connected":0,"requests":0,"rps":0.0,"errors":0,"p50_us":0,"p90_us":0,"p99_us":0,"p999_us":0,"max_us":0,"mean_us":0.0,"connect_failed":0,"closed_by_peer":0,"bad_responses":0,"src":"","xdp_mode":"native","interrupted":true,"idle_pct":0.0,"client":{"rx_frames":0,"tx_frames":0,"rx_dropped":0,"xsk_rx_dropped":0,"resets_received":0}}"#
    );
}
