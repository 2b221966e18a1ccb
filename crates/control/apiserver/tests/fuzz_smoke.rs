//! A short fuzzing run in the ordinary test suite (stable Rust, no libFuzzer): the bodies of
//! the `cargo fuzz` targets (`strata_apiserver::fuzzing`, also run by `fuzz/`) get valid seeds
//! and twenty thousand deterministic mutations of them (bit flips, random bytes, cuts,
//! insertions, repeats, splices). Any panic fails the test; the seed of the mutator is fixed,
//! so a failure reproduces. The long runs with coverage guidance are `fuzz/README.md`'s.

use strata_apiserver::fuzzing;

const ROUNDS: usize = 20_000;

/// xorshift64*: deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One to four mutations of a seed (or of two seeds spliced).
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below(len - i);
                d.drain(i..i + n);
            }
            3 => {
                let i = rng.below(len + 1);
                let extra: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                d.splice(i..i, extra);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let chunk = d[i..i + n].to_vec();
                let at = rng.below(len + 1);
                d.splice(at..at, chunk);
            }
            5 => d.truncate(rng.below(len + 1)),
            6 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(d.len() + 1);
                let from = rng.below(other.len() + 1);
                d.truncate(cut);
                d.extend_from_slice(&other[from..]);
            }
            _ => {
                // An interesting byte where the formats care: quotes, brackets, NUL, 0xff, varint
                // continuation bits.
                let special = [b'"', b'{', b'}', b'[', b']', b',', b':', b'\\', 0, 0xff, 0x80, b'=', b'!', b'('];
                let i = rng.below(len + 1);
                d.insert(i, special[rng.below(special.len())]);
            }
        }
    }
    d
}

fn run(target: fn(&[u8]), seeds: Vec<Vec<u8>>, seed: u64) {
    let mut rng = Rng(seed);
    for s in &seeds {
        target(s);
    }
    for _ in 0..ROUNDS {
        let input = mutate(&mut rng, &seeds);
        target(&input);
    }
}

/// Protobuf: a varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Protobuf: a length-delimited field.
fn field(n: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(n << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A body as kubectl sends it: `k8s\0` and a runtime.Unknown holding a ConfigMap.
fn protobuf_configmap() -> Vec<u8> {
    let mut type_meta = Vec::new();
    field(1, b"v1", &mut type_meta);
    field(2, b"ConfigMap", &mut type_meta);
    let mut meta = Vec::new();
    field(1, b"cm-1", &mut meta);
    let mut entry = Vec::new();
    field(1, b"key", &mut entry);
    field(2, b"value", &mut entry);
    let mut cm = Vec::new();
    field(1, &meta, &mut cm);
    field(2, &entry, &mut cm);
    let mut unknown = Vec::new();
    field(1, &type_meta, &mut unknown);
    field(2, &cm, &mut unknown);
    field(3, b"", &mut unknown);
    field(4, b"application/vnd.kubernetes.protobuf", &mut unknown);
    let mut body = b"k8s\0".to_vec();
    body.extend_from_slice(&unknown);
    body
}

#[test]
fn protobuf_decode_survives_mutated_bodies() {
    let cm = protobuf_configmap();
    assert!(strata_apiserver::protobuf::decode(&cm).is_ok(), "the seed is a valid body");
    run(fuzzing::protobuf_decode, vec![cm, b"k8s\0".to_vec(), Vec::new()], 0x5eed_0001);
}

#[test]
fn patches_survive_mutated_documents_and_patches() {
    let doc = r#"{"metadata":{"name":"web","labels":{"a":"1"},"finalizers":["x"]},"spec":{"containers":[{"name":"c","image":"i","ports":[{"containerPort":80}],"env":[{"name":"A","value":"1"}]}]}}"#;
    let patches = [
        r#"{"metadata":{"labels":{"a":null,"b":"2"}},"spec":{"containers":[{"name":"c","image":"j"}]}}"#,
        r#"[{"op":"add","path":"/metadata/labels/c","value":"3"},{"op":"remove","path":"/spec/containers/0/ports"},{"op":"move","from":"/metadata/name","path":"/x"},{"op":"test","path":"/x","value":"web"}]"#,
        r#"{"$setElementOrder/finalizers":["y","x"],"$deleteFromPrimitiveList/finalizers":["x"],"spec":{"containers":[{"name":"c","$patch":"delete"}],"$retainKeys":["containers"]}}"#,
    ];
    let mut seeds = Vec::new();
    for kind in 0u8..3 {
        for p in patches {
            let mut s = vec![kind];
            s.extend_from_slice(doc.as_bytes());
            s.push(0);
            s.extend_from_slice(p.as_bytes());
            seeds.push(s);
        }
    }
    run(fuzzing::patch, seeds, 0x5eed_0002);
}

#[test]
fn selectors_survive_mutated_expressions() {
    let seeds = [
        "app=web,tier!=back",
        "app in (web,db),!legacy,v notin (2,3)",
        "metadata.name=web-1,status.phase!=Failed,spec.nodeName==n1",
        "a.b/c-d_e=f",
        "",
    ];
    run(fuzzing::selectors, seeds.iter().map(|s| s.as_bytes().to_vec()).collect(), 0x5eed_0003);
}

#[test]
fn create_validation_survives_mutated_objects() {
    let objects = [
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm","labels":{"a":"b"},"annotations":{"x/y":"z"}},"data":{"k":"v"}}"#,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-"},"spec":{"containers":[{"name":"c","image":"busybox","ports":[{"containerPort":80}]}]}}"#,
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":2,"selector":{"matchLabels":{"app":"d"}},"template":{"metadata":{"labels":{"app":"d"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}"#,
        r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"rb"},"roleRef":{"kind":"Role","name":"r"},"subjects":[{"kind":"User","name":"u"}]}"#,
    ];
    let n = strata_apiserver::resources::RESOURCES.len();
    let mut seeds = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        // The first byte picks the kind; pick the matching one and a few others.
        for which in [i, i + 7, i + 13] {
            let mut s = vec![(which % n) as u8];
            s.extend_from_slice(o.as_bytes());
            seeds.push(s);
        }
    }
    run(fuzzing::create_validation, seeds, 0x5eed_0004);
}
