//! Handle resolution by DNS TXT (`_atproto.HANDLE`) against a small local DNS server.
//!
//! The server answers TXT questions from a table and says NXDOMAIN otherwise, over UDP (and TCP on the
//! same port, which the resolver may also use).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use butterfly_identity::{Error, Resolver, ResolverConfig};
use butterfly_net::{HttpClient, HttpConfig};
use butterfly_syntax::Handle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Zone = Arc<HashMap<String, Vec<String>>>;

/// Builds the answer to one DNS query, or `None` for something that is not a query.
fn answer(query: &[u8], zone: &Zone) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the zero byte, then QTYPE and QCLASS.
    let mut position = 12;
    let mut labels = Vec::new();
    loop {
        let length = *query.get(position)? as usize;
        position += 1;
        if length == 0 {
            break;
        }
        labels
            .push(String::from_utf8_lossy(query.get(position..position + length)?).to_lowercase());
        position += length;
    }
    let question_end = position + 4;
    let question = query.get(12..question_end)?;
    let query_type = u16::from_be_bytes([query[position], query[position + 1]]);
    let name = labels.join(".");
    let records = zone.get(&name);

    let mut response = Vec::new();
    response.extend_from_slice(&query[0..2]); // id
    let rcode: u8 = if records.is_some() { 0 } else { 3 }; // NOERROR or NXDOMAIN
    response.extend_from_slice(&[0x85, 0x80 | rcode]); // response, authoritative, RD, RA
    let answers: Vec<&String> = match records {
        Some(records) if query_type == 16 => records.iter().collect(),
        _ => Vec::new(),
    };
    response.extend_from_slice(&1u16.to_be_bytes()); // one question
    response.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    response.extend_from_slice(&[0, 0, 0, 0]); // no authority or additional records
    response.extend_from_slice(question);
    for text in answers {
        let mut data = Vec::new();
        for chunk in text.as_bytes().chunks(255) {
            data.push(chunk.len() as u8);
            data.extend_from_slice(chunk);
        }
        response.extend_from_slice(&[0xc0, 0x0c]); // the name: a pointer to the question
        response.extend_from_slice(&16u16.to_be_bytes()); // TXT
        response.extend_from_slice(&1u16.to_be_bytes()); // IN
        response.extend_from_slice(&60u32.to_be_bytes()); // TTL
        response.extend_from_slice(&(data.len() as u16).to_be_bytes());
        response.extend_from_slice(&data);
    }
    Some(response)
}

/// The resolver asks one address over UDP and falls back to TCP on the same port, so the test
/// server needs both. The kernel picks a free UDP port, but that TCP port may already be taken by
/// another test's socket; then try another port rather than fail.
async fn bind_udp_and_tcp_on_one_port() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    for _ in 0..50 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind udp");
        let address = udp.local_addr().expect("addr");
        match tokio::net::TcpListener::bind(address).await {
            Ok(tcp) => return (udp, tcp),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(error) => panic!("bind tcp on {address}: {error}"),
        }
    }
    panic!("no loopback port was free for both UDP and TCP in 50 tries");
}

async fn start_dns(zone: HashMap<String, Vec<String>>) -> SocketAddr {
    let zone: Zone = Arc::new(zone);
    let (udp, tcp) = bind_udp_and_tcp_on_one_port().await;
    let address = udp.local_addr().expect("addr");
    let udp_zone = zone.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 4096];
        while let Ok((length, peer)) = udp.recv_from(&mut buffer).await {
            if let Some(response) = answer(&buffer[..length], &udp_zone) {
                let _ = udp.send_to(&response, peer).await;
            }
        }
    });
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let zone = zone.clone();
            tokio::spawn(async move {
                let mut length = [0u8; 2];
                while stream.read_exact(&mut length).await.is_ok() {
                    let mut query = vec![0u8; u16::from_be_bytes(length) as usize];
                    if stream.read_exact(&mut query).await.is_err() {
                        return;
                    }
                    let Some(response) = answer(&query, &zone) else {
                        return;
                    };
                    let _ = stream
                        .write_all(&(response.len() as u16).to_be_bytes())
                        .await;
                    let _ = stream.write_all(&response).await;
                }
            });
        }
    });
    address
}

async fn resolver() -> Resolver {
    let zone = HashMap::from([
        (
            "_atproto.alice.example.com".to_owned(),
            vec!["did=did:plc:ewvi7nxzyoun6zhxrhs64oiz".to_owned()],
        ),
        (
            "_atproto.mixed.example.com".to_owned(),
            vec![
                "v=spf1 -all".to_owned(),
                "did=did:web:mixed.example.com".to_owned(),
                "did=did:web:mixed.example.com".to_owned(),
            ],
        ),
        (
            "_atproto.twice.example.com".to_owned(),
            vec![
                "did=did:plc:ewvi7nxzyoun6zhxrhs64oiz".to_owned(),
                "did=did:web:other.example.com".to_owned(),
            ],
        ),
        (
            "_atproto.garbage.example.com".to_owned(),
            vec!["did=not a did".to_owned()],
        ),
        (
            "_atproto.empty.example.com".to_owned(),
            vec!["something else".to_owned()],
        ),
    ]);
    let server = start_dns(zone).await;
    let http = HttpClient::new(&HttpConfig::with_private_network(true)).expect("client");
    let config = ResolverConfig {
        dns_servers: Some(vec![server]),
        // Well-known lookups go nowhere (a closed port), so only DNS can answer.
        well_known_base: Some(url::Url::parse("http://127.0.0.1:1").expect("url")),
        ..ResolverConfig::default()
    };
    Resolver::new(http, config).expect("resolver")
}

fn handle(text: &str) -> Handle {
    Handle::parse(text).expect("test handle")
}

#[tokio::test]
async fn a_txt_record_names_the_did() {
    let resolver = resolver().await;
    let did = resolver
        .resolve_handle_by_dns(&handle("Alice.Example.com"))
        .await
        .expect("resolves");
    assert_eq!(did.as_str(), "did:plc:ewvi7nxzyoun6zhxrhs64oiz");
    // Through the combined lookup too (the well-known method fails here).
    let did = resolver
        .fetch_handle_did(&handle("alice.example.com"))
        .await
        .expect("resolves");
    assert_eq!(did.as_str(), "did:plc:ewvi7nxzyoun6zhxrhs64oiz");
    // Other TXT records and repeats of the same DID are fine.
    let did = resolver
        .fetch_handle_did(&handle("mixed.example.com"))
        .await
        .expect("resolves");
    assert_eq!(did.as_str(), "did:web:mixed.example.com");
}

#[tokio::test]
async fn conflicting_or_malformed_records_are_invalid_and_absent_ones_not_found() {
    let resolver = resolver().await;
    for name in ["twice.example.com", "garbage.example.com"] {
        let error = resolver
            .fetch_handle_did(&handle(name))
            .await
            .expect_err("invalid");
        assert!(
            matches!(error, Error::InvalidHandleAnswer { .. }),
            "{name}: {error:?}"
        );
    }
    for name in ["nobody.example.com", "empty.example.com"] {
        let error = resolver
            .fetch_handle_did(&handle(name))
            .await
            .expect_err("absent");
        assert!(
            matches!(error, Error::HandleNotFound { .. }),
            "{name}: {error:?}"
        );
    }
}
