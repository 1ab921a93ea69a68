use super::*;

fn show(text: &str) -> Vec<(Kind, &str, Confidence)> {
    Detector::new(300)
        .detect(text)
        .into_iter()
        .map(|m| (m.kind, &text[m.start..m.end], m.confidence))
        .collect()
}

#[test]
fn smoke() {
    let t = std::time::Instant::now();
    let _ = automata();
    eprintln!("build {:?}", t.elapsed());
    let text = "Patient John, DOB: 03/05/1980, MRN: 00123456, SSN 536-22-8726. Dx: E11.9 type 2 diabetes. NPI 1234567893 provider. Call (212) 555-1234 or mail j.doe@example.org. Card 4111 1111 1111 1111. Medicare 1EG4-TE5-MK73. DEA AB1234563. Member ID: XJH123456789.";
    for m in show(text) {
        eprintln!("{m:?}");
    }
}

#[test]
#[ignore]
fn profile_counts() {
    for name in ["phi_free", "mixed"] {
        let Ok(text) = std::fs::read_to_string(format!("/tmp/wtexts/{name}.txt")) else {
            continue;
        };
        let d = Detector::new(300);
        let (mut kw, mut terms, mut trig) = (Vec::new(), Vec::new(), Vec::new());
        d.scan_words(text.as_bytes(), &mut kw, &mut terms, &mut trig);
        let lx = &d.automata.lexicon;
        let hay = text.as_bytes();
        let mut pw: std::collections::HashMap<String, usize> = Default::default();
        let mut starts = 0;
        let mut passes = 0;
        for i in 0..hay.len() {
            if hay[i].is_ascii_alphabetic() && (i == 0 || !lexicon::is_word(hay[i - 1])) {
                starts += 1;
                if lx
                    .filter
                    .probe(
                        hay,
                        i,
                        hay[i..].iter().take_while(|b| lexicon::is_word(**b)).count(),
                    )
                    .is_some()
                {
                    passes += 1;
                    let w: String = text[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric())
                        .collect();
                    *pw.entry(w.to_lowercase()).or_default() += 1;
                }
            }
        }
        let mut freq: std::collections::BTreeMap<&str, usize> = Default::default();
        for h in &kw {
            *freq.entry(lx.keywords[h.keyword].text).or_default() += 1;
        }
        let mut top: Vec<_> = pw.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1));
        eprintln!("{:?}", &top[..top.len().min(40)]);
        eprintln!(
            "{name}: starts {starts} passes {passes} kw {} terms {} triggers {} {:?}",
            kw.len(),
            terms.len(),
            trig.len(),
            freq
        );
    }
}

#[test]
#[ignore]
fn profile_phases() {
    for name in ["phi_free", "mixed"] {
        let Ok(text) = std::fs::read_to_string(format!("/tmp/wtexts/{name}.txt")) else {
            return;
        };
        let d = Detector::new(300);
        let hay = text.as_bytes();
        let best = |f: &mut dyn FnMut()| {
            let mut best = std::time::Duration::MAX;
            for _ in 0..100 {
                let t = std::time::Instant::now();
                f();
                best = best.min(t.elapsed());
            }
            best
        };
        let words = best(&mut || {
            let (mut kw, mut terms, mut trig) = (Vec::new(), Vec::new(), Vec::new());
            d.scan_words(std::hint::black_box(hay), &mut kw, &mut terms, &mut trig);
            std::hint::black_box((kw, terms, trig));
        });
        let (mut kw, mut terms, mut trig) = (Vec::new(), Vec::new(), Vec::new());
        d.scan_words(hay, &mut kw, &mut terms, &mut trig);
        let ids = best(&mut || {
            std::hint::black_box(d.scan_identifiers(std::hint::black_box(hay), &kw, &trig));
        });
        let all = best(&mut || {
            std::hint::black_box(d.detect(std::hint::black_box(&text)));
        });
        let mbps = hay.len() as f64 / all.as_secs_f64() / 1e6;
        eprintln!("{name}: scan_words {words:?} identifiers {ids:?} detect {all:?} = {mbps:.0} MB/s");
    }
}

#[test]
#[ignore]
fn profile_word_loop() {
    let Ok(text) = std::fs::read_to_string("/tmp/wtexts/phi_free.txt") else {
        return;
    };
    let d = Detector::new(300);
    let lx = &d.automata.lexicon;
    let hay = text.as_bytes();
    let n = 300;
    let table: Vec<u64> = vec![0x0101_0101_0101_0101; 2048];
    for variant in 0..6 {
        let mut best = std::time::Duration::MAX;
        let mut total = 0usize;
        for _ in 0..n {
            let t = std::time::Instant::now();
            let hay = std::hint::black_box(hay);
            let mut prev_word = 0u64;
            let mut next = if hay.len() >= 64 {
                bytes::classify(hay[..64].try_into().unwrap())
            } else {
                bytes::Masks::default()
            };
            let mut base = 0;
            while base + 64 <= hay.len() {
                let m = next;
                next = match hay.get(base + 64..base + 128) {
                    Some(b) => bytes::classify(b.try_into().unwrap()),
                    None => bytes::Masks::default(),
                };
                let starts = m.letter & !((m.word << 1) | prev_word);
                prev_word = m.word >> 63;
                let combined = u128::from(m.word) | (u128::from(next.word) << 64);
                let mut bits = starts;
                while bits != 0 {
                    let bit = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    match variant {
                        0 => total += bit,
                        1 => total += (combined >> bit).trailing_ones() as usize,
                        3 | 4 | 5 => {
                            let len = (combined >> bit).trailing_ones() as usize;
                            let i = base + bit as usize;
                            let head = if variant == 5 {
                                0x6162_6364u32 ^ (i as u32)
                            } else if i + 4 <= hay.len() {
                                u32::from_le_bytes([hay[i], hay[i + 1], hay[i + 2], hay[i + 3]])
                            } else {
                                0
                            };
                            let keep = if variant == 4 {
                                u32::MAX
                            } else {
                                (u64::MAX >> (64 - 8 * len.min(4))) as u32
                            };
                            let key = ((head | 0x2020_2020) & keep)
                                ^ (len.min(32) as u32).wrapping_mul(0x9E37_79B9);
                            let h = (key.wrapping_mul(0x85EB_CA6B) >> 15) as usize;
                            if table[h >> 6] >> (h & 63) & 1 != 0 {
                                total += 1;
                            }
                        }
                        _ => {
                            let len = (combined >> bit).trailing_ones() as usize;
                            if lx.filter.probe(hay, base + bit, len).is_some() {
                                total += 1;
                            }
                        }
                    }
                }
                base += 64;
            }
            best = best.min(t.elapsed());
        }
        eprintln!("variant {variant}: {best:?} per MB ({total})");
    }
}

#[test]
#[ignore]
fn profile_calibrate() {
    let Ok(text) = std::fs::read_to_string("/tmp/wtexts/phi_free.txt") else {
        return;
    };
    let mut table = [0u8; 256];
    for (i, t) in table.iter_mut().enumerate() {
        *t = (i as u8).wrapping_mul(7) & 3;
    }
    let (mut a, mut b) = (std::time::Duration::MAX, std::time::Duration::MAX);
    let mut sink = 0usize;
    for round in 0..200 {
        let hay = std::hint::black_box(text.as_bytes());
        let t = std::time::Instant::now();
        sink += hay.iter().filter(|b| b.is_ascii_digit()).count() + round;
        sink = std::hint::black_box(sink);
        a = a.min(t.elapsed());
        let hay = std::hint::black_box(text.as_bytes());
        let t = std::time::Instant::now();
        let mut state = round;
        for &byte in hay {
            state = usize::from(table[(state * 64 + usize::from(byte)) & 255]);
        }
        sink = std::hint::black_box(sink + state);
        b = b.min(t.elapsed());
    }
    eprintln!("vectorized count {a:?}; dependent byte loop {b:?} per MB ({sink})");
}

#[test]
#[ignore]
fn profile_batched() {
    let Ok(text) = std::fs::read_to_string("/tmp/wtexts/phi_free.txt") else {
        return;
    };
    let d = Detector::new(300);
    let lx = &d.automata.lexicon;
    let hay = text.as_bytes();
    let blocks = hay.len() / 64;
    let masks: Vec<bytes::Masks> = (0..blocks + 1)
        .map(|b| {
            hay.get(b * 64..b * 64 + 64).map_or(bytes::Masks::default(), |s| {
                bytes::classify(s.try_into().unwrap())
            })
        })
        .collect();
    let mut best = std::time::Duration::MAX;
    let mut total = 0usize;
    for _ in 0..300 {
        let t = std::time::Instant::now();
        let hay = std::hint::black_box(hay);
        let mut pos = [0u32; 4 * 64 + 64];
        let mut cand = [0u32; 4 * 64 + 64];
        let mut prev_word = 0u64;
        let mut g = 0;
        while g + 4 <= blocks {
            let mut n = 0usize;
            let mut words = [0u64; 5];
            for b in 0..4 {
                let m = bytes::classify(hay[(g + b) * 64..(g + b) * 64 + 64].try_into().unwrap());
                words[b] = m.word;
                let mut bits = m.letter & !((m.word << 1) | prev_word);
                prev_word = m.word >> 63;
                let cnt = bits.count_ones() as usize;
                let base = ((g + b) * 64) as u32;
                for k in 0..12 {
                    pos[n + k] = base + bits.trailing_zeros();
                    bits &= bits.wrapping_sub(1);
                }
                if cnt > 12 {
                    let mut k = 12;
                    while bits != 0 {
                        pos[n + k] = base + bits.trailing_zeros();
                        bits &= bits - 1;
                        k += 1;
                    }
                }
                n += cnt;
            }
            words[4] = masks.get(g + 4).map_or(0, |m| m.word);
            let gbase = g * 64;
            let mut m = 0usize;
            for &p in &pos[..n] {
                let i = p as usize;
                let r = i - gbase;
                let (q, sh) = (r / 64, (r % 64) as u32);
                let ahead = (words[q] >> sh) | words[q + 1].unbounded_shl(64 - sh);
                let len = ahead.trailing_ones() as usize;
                cand[m] = p;
                m += usize::from(lx.filter.probe(hay, i, len).is_some());
            }
            total += m;
            g += 4;
        }
        best = best.min(t.elapsed());
    }
    eprintln!("batched: {best:?} per MB ({total})");
}

#[test]
#[ignore]
fn profile_triggers() {
    for name in ["phi_free", "mixed"] {
        let Ok(text) = std::fs::read_to_string(format!("/tmp/wtexts/{name}.txt")) else {
            return;
        };
        let d = Detector::new(300);
        let hay = text.as_bytes();
        let (mut kw, mut terms, mut trig) = (Vec::new(), Vec::new(), Vec::new());
        d.scan_words(hay, &mut kw, &mut terms, &mut trig);
        let (mut pass, mut month, mut walks, mut matched) = (0, 0, 0, 0);
        let mut shapes: std::collections::BTreeMap<String, usize> = Default::default();
        for &p in &trig {
            if hay[p] == b'@' {
                continue;
            }
            let run_end = p + hay[p..].iter().take_while(|b| b.is_ascii_digit()).count();
            let Some(t) = token_start(hay, p, 0) else { continue };
            let m = if run_end - p <= 2 {
                month_before(hay, t, 0)
            } else {
                None
            };
            if m.is_some() {
                month += 1;
            }
            if m.is_none() && !may_start_shape(hay, t, p, run_end) {
                continue;
            }
            pass += 1;
            walks += 1;
            if d.automata.shapes.dfa.find(hay, m.unwrap_or(t)).is_none() && walks % 400 == 0 {
                eprintln!(
                    "  miss {:?}",
                    &text[t.saturating_sub(8)..(run_end + 8).min(text.len())]
                );
            }
            if let Some((pid, _)) = d.automata.shapes.dfa.find(hay, m.unwrap_or(t)) {
                matched += 1;
                *shapes
                    .entry(format!("{:?}", d.automata.shapes.shape(pid)))
                    .or_default() += 1;
            }
        }
        eprintln!(
            "{name}: triggers {} pass {pass} month {month} walks {walks} matched {matched} {shapes:?}",
            trig.len()
        );
    }
}
