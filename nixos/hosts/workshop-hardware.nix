# Placeholder hardware configuration for the example workshop host.
#
# Why this file exists: a NixOS system needs a root file system and a boot loader to
# evaluate. These values match a typical Verda GPU VM (virtio disk /dev/vda, BIOS
# boot via GRUB, ext4 root labelled "nixos"), which is what docs/DEPLOY.md installs.
# On the real machine REPLACE this file with:
#   nixos-generate-config --show-hardware-config > nixos/hosts/workshop-hardware.nix
{ lib, modulesPath, ... }:

{
  imports = [ (modulesPath + "/profiles/qemu-guest.nix") ];

  boot.loader.grub = {
    enable = true;
    device = "/dev/vda";
  };
  boot.initrd.availableKernelModules = [
    "ahci"
    "nvme"
    "virtio_pci"
    "virtio_blk"
    "virtio_scsi"
    "sd_mod"
  ];

  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };

  # Verda's network hands out addresses by DHCP.
  networking.useDHCP = lib.mkDefault true;

  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
}
