fn main() -> std::process::ExitCode {
    ward::cli::main()
}
