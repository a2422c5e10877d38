import ArgumentParser

#if canImport(Glibc)
  import Glibc
#endif

/// Entry point: `vdiskfs [mount] IMAGE MOUNTPOINT [-o …]` or `vdiskfs info IMAGE`.
@main
struct VDiskFS: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "vdiskfs",
    abstract:
      "Mount a virtual-machine disk image (\(FormatOption.names); with its backing chain) as one raw file, disk.raw.",
    discussion: """
      Examples:
        vdiskfs vm.qcow2 /mnt/vm               # /mnt/vm/disk.raw is the guest disk
        losetup -r -f --show /mnt/vm/disk.raw  # attach it as a block device
        fusermount3 -u /mnt/vm                 # unmount
        vdiskfs info --backing-chain vm.qcow2
        vdiskfs app.ova /mnt/app               # /mnt/app/disks/1-<file>/disk.raw per disk
        vdiskfs verify app.ova                 # check the .mf manifest's digests

      \(FormatOption.table)

      \(ExitCodes.helpText)
      """,
    version: BuildInfo.versionText,
    subcommands: [MountCommand.self, InfoCommand.self, MapCommand.self, VerifyCommand.self],
    defaultSubcommand: MountCommand.self)

  static func main() {
    do {
      var command = try parseAsRoot()
      try command.run()
    } catch let failure as CLIFailure {
      printError(failure.message)
      Glibc.exit(failure.code)
    } catch {
      let code = exitCode(for: error)
      if code == .success {
        // --help, --version
        print(fullMessage(for: error))
        Glibc.exit(ExitCodes.success)
      }
      printError(message(for: error))
      if code == .validationFailure {
        let usage = usageString()
        if !usage.isEmpty { printError(usage) }
        Glibc.exit(ExitCodes.usage)
      }
      Glibc.exit(ExitCodes.failure)
    }
  }
}
