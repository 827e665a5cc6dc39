fn main() {
    let mut buf = itoa::Buffer::new();
    println!("rust app: {} formatted by itoa", buf.format(1_234_567_u32));
}
