use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn copies_both_ways_with_half_close() {
    let (a_near, mut a_far) = tokio::io::duplex(1024);
    let (b_near, mut b_far) = tokio::io::duplex(1024);
    let task = tokio::spawn(pipe(
        a_near,
        b_near,
        Duration::from_secs(5),
        std::future::pending(),
        None,
    ));
    a_far.write_all(b"hello").await.unwrap();
    a_far.shutdown().await.unwrap();
    let mut got = Vec::new();
    b_far.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hello");
    // B can still answer after A half-closed.
    b_far.write_all(b"world!").await.unwrap();
    b_far.shutdown().await.unwrap();
    let mut back = Vec::new();
    a_far.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"world!");
    let p = task.await.unwrap();
    assert!(matches!(p.end, End::Closed), "{:?}", p.end);
    assert_eq!((p.a_to_b, p.b_to_a), (5, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_writers_lose_and_reorder_nothing() {
    // Tiny pipes make every write partial or pending, so bytes wait in `pending`.
    let (a_near, a_far) = tokio::io::duplex(61);
    let (b_near, b_far) = tokio::io::duplex(67);
    let task = tokio::spawn(pipe(
        a_near,
        b_near,
        Duration::from_secs(30),
        std::future::pending(),
        None,
    ));
    let data = |seed: u32, len: usize| -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed) as u8)
            .collect()
    };
    let (up, down) = (data(7, 300_000), data(11, 200_000));
    let side = |mut s: tokio::io::DuplexStream, out: Vec<u8>| async move {
        let (mut r, mut w) = tokio::io::split(&mut s);
        let send = async {
            w.write_all(&out).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let recv = r.read_to_end(&mut got);
        let (_, n) = tokio::join!(send, recv);
        n.unwrap();
        got
    };
    let (at_a, at_b) = tokio::join!(side(a_far, up.clone()), side(b_far, down.clone()));
    assert!(at_b == up, "A to B corrupted");
    assert!(at_a == down, "B to A corrupted");
    let p = task.await.unwrap();
    assert!(matches!(p.end, End::Closed), "{:?}", p.end);
    assert_eq!((p.a_to_b, p.b_to_a), (300_000, 200_000));
}

#[tokio::test]
async fn idle_timeout_ends_and_keeps_counts() {
    let (a_near, mut a_far) = tokio::io::duplex(1024);
    let (b_near, mut b_far) = tokio::io::duplex(1024);
    let task = tokio::spawn(pipe(
        a_near,
        b_near,
        Duration::from_millis(200),
        std::future::pending(),
        None,
    ));
    a_far.write_all(b"abc").await.unwrap();
    let mut buf = [0u8; 3];
    b_far.read_exact(&mut buf).await.unwrap();
    let p = task.await.unwrap();
    assert!(matches!(p.end, End::Idle), "{:?}", p.end);
    assert_eq!(p.a_to_b, 3);
}

#[tokio::test]
async fn cancel_ends_pipe() {
    let (a_near, _a_far) = tokio::io::duplex(1024);
    let (b_near, _b_far) = tokio::io::duplex(1024);
    let p = pipe(
        a_near,
        b_near,
        Duration::from_secs(60),
        tokio::time::sleep(Duration::from_millis(50)),
        None,
    )
    .await;
    assert!(matches!(p.end, End::Cancelled));
}
