//! A tiny authoritative DNS server for tests, on 127.0.0.1 over UDP and TCP
//! (same port), built on hickory-proto.
//!
//! ```ignore
//! let dns = TestDns::start().await;
//! dns.mx("example.test", 10, "mx1.example.test");
//! dns.a("mx1.example.test", Ipv4Addr::LOCALHOST);
//! dns.null_mx("nomail.test");
//! dns.servfail("broken.test");
//! config.dns.nameservers = vec![dns.addr()];
//! ```
//!
//! Answers from a table that can change while it runs: MX, A, AAAA and TXT
//! records; a known name asked for a type it lacks gets an empty NOERROR
//! (NODATA) answer; an unknown name gets NXDOMAIN; a name marked with
//! `servfail` gets SERVFAIL for every type. Every question is logged
//! (`queries()`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
enum Rec {
    Mx(u16, String),
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// One TXT record, split into character-strings of 255 octets at most.
    Txt(String),
}

#[derive(Debug, Default)]
struct Zone {
    names: HashMap<String, Vec<Rec>>,
    servfail: HashSet<String>,
}

/// A running test DNS server; stops when dropped.
pub struct TestDns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<Mutex<Vec<(String, RecordType)>>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Table keys: lower case, no trailing dot.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl TestDns {
    /// Binds 127.0.0.1:0 (UDP, and TCP on the same port when it is free).
    pub async fn start() -> TestDns {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind DNS UDP");
        let addr = udp.local_addr().expect("DNS address");
        let zone = Arc::new(Mutex::new(Zone::default()));
        let queries = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();

        let (z, q) = (zone.clone(), queries.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    return;
                };
                if let Some(answer) = respond(&buf[..n], &z, &q) {
                    let _ = udp.send_to(&answer, peer).await;
                }
            }
        }));

        if let Ok(tcp) = TcpListener::bind(addr).await {
            let (z, q) = (zone.clone(), queries.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = tcp.accept().await else {
                        return;
                    };
                    let (z, q) = (z.clone(), q.clone());
                    tokio::spawn(async move {
                        loop {
                            let mut len = [0u8; 2];
                            if stream.read_exact(&mut len).await.is_err() {
                                return;
                            }
                            let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
                            if stream.read_exact(&mut query).await.is_err() {
                                return;
                            }
                            let Some(answer) = respond(&query, &z, &q) else {
                                return;
                            };
                            let Ok(n) = u16::try_from(answer.len()) else {
                                return;
                            };
                            if stream.write_all(&n.to_be_bytes()).await.is_err()
                                || stream.write_all(&answer).await.is_err()
                            {
                                return;
                            }
                        }
                    });
                }
            }));
        }

        TestDns {
            addr,
            zone,
            queries,
            tasks,
        }
    }

    /// Where to send queries (`dns.nameservers`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn add(&self, name: &str, rec: Rec) -> &Self {
        self.zone
            .lock()
            .unwrap()
            .names
            .entry(key(name))
            .or_default()
            .push(rec);
        self
    }

    /// A TXT record (a DKIM key, say); long text is split into strings of
    /// 255 octets, as DNS requires.
    pub fn txt(&self, name: &str, text: &str) -> &Self {
        self.add(name, Rec::Txt(text.to_string()))
    }

    /// An MX record: `domain` -> `exchange` at `preference`.
    pub fn mx(&self, domain: &str, preference: u16, exchange: &str) -> &Self {
        self.add(domain, Rec::Mx(preference, exchange.to_string()))
    }

    /// A null MX (RFC 7505): `0 .`.
    pub fn null_mx(&self, domain: &str) -> &Self {
        self.add(domain, Rec::Mx(0, ".".to_string()))
    }

    /// An A record.
    pub fn a(&self, name: &str, ip: Ipv4Addr) -> &Self {
        self.add(name, Rec::A(ip))
    }

    /// An AAAA record.
    pub fn aaaa(&self, name: &str, ip: Ipv6Addr) -> &Self {
        self.add(name, Rec::Aaaa(ip))
    }

    /// An A or AAAA record, by the address's family.
    pub fn address(&self, name: &str, ip: IpAddr) -> &Self {
        match ip {
            IpAddr::V4(v4) => self.a(name, v4),
            IpAddr::V6(v6) => self.aaaa(name, v6),
        }
    }

    /// Makes `name` exist with no records (NODATA for every type).
    pub fn exists(&self, name: &str) -> &Self {
        self.zone.lock().unwrap().names.entry(key(name)).or_default();
        self
    }

    /// Answer SERVFAIL for every question about `name`.
    pub fn servfail(&self, name: &str) -> &Self {
        self.zone.lock().unwrap().servfail.insert(key(name));
        self
    }

    /// Every question asked so far: (name without trailing dot, type).
    pub fn queries(&self) -> Vec<(String, RecordType)> {
        self.queries.lock().unwrap().clone()
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn name(s: &str) -> Name {
    let mut n = Name::from_str(s).expect("test DNS name");
    n.set_fqdn(true);
    n
}

/// Builds the answer to one query message; `None` for garbage.
fn respond(query: &[u8], zone: &Mutex<Zone>, queries: &Mutex<Vec<(String, RecordType)>>) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut response = Message::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.authoritative = true;
    response.metadata.recursion_available = true;
    let Some(question) = request.queries.first().cloned() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response.to_vec().ok();
    };
    response.add_query(question.clone());
    let qname = key(&question.name.to_ascii());
    let qtype = question.query_type;
    queries.lock().unwrap().push((qname.clone(), qtype));

    let zone = zone.lock().unwrap();
    if zone.servfail.contains(&qname) {
        response.metadata.response_code = ResponseCode::ServFail;
        return response.to_vec().ok();
    }
    let Some(records) = zone.names.get(&qname) else {
        response.metadata.response_code = ResponseCode::NXDomain;
        response.add_authority(soa());
        return response.to_vec().ok();
    };
    let owner = question.name.clone();
    for rec in records {
        let rdata = match (rec, qtype) {
            (Rec::Mx(pref, exchange), RecordType::MX) => {
                let exchange = if exchange == "." {
                    Name::root()
                } else {
                    name(exchange)
                };
                RData::MX(MX::new(*pref, exchange))
            }
            (Rec::A(ip), RecordType::A) => RData::A(A(*ip)),
            (Rec::Aaaa(ip), RecordType::AAAA) => RData::AAAA(AAAA(*ip)),
            (Rec::Txt(text), RecordType::TXT) => RData::TXT(TXT::new(
                text.as_bytes()
                    .chunks(255)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect(),
            )),
            _ => continue,
        };
        response.add_answer(Record::from_rdata(owner.clone(), 60, rdata));
    }
    if response.answers.is_empty() {
        response.add_authority(soa());
    }
    response.to_vec().ok()
}

/// The SOA that makes negative answers cacheable for a second only.
fn soa() -> Record {
    Record::from_rdata(
        name("test"),
        1,
        RData::SOA(SOA::new(
            name("ns.test"),
            name("hostmaster.test"),
            1,
            60,
            60,
            60,
            1,
        )),
    )
}
