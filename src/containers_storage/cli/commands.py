"""The command table: names, help texts, argument counts and flags, in the Go CLI's order.

Pure data, so that start-up imports nothing else; each command's code lives in a module that
main imports only when that command runs.  The order is Go's registration order (its source
files in alphabetical order), which is the order ``containers-storage --help`` lists them in.
"""

from __future__ import annotations


class FlagSpec:
    """One flag of a command: kind ("bool", "string" or "list"), value key, Go names, default, help."""

    __slots__ = ("default", "dest", "kind", "names", "usage")

    def __init__(self, kind: str, dest: str, names: tuple[str, ...], default: bool | str, usage: str) -> None:
        self.kind = kind
        self.dest = dest
        self.names = names
        self.default = default
        self.usage = usage


class Command:
    """One command: its names (first is canonical), help texts, argument counts, flags, code.

    ``max_args`` -1 means unlimited; ``action`` is "module:function" inside this package.
    (Plain classes rather than NamedTuple: importing typing costs start-up time.)
    """

    __slots__ = ("action", "flags", "max_args", "min_args", "names", "options_help", "usage")

    def __init__(self, names: tuple[str, ...], options_help: str, usage: str, min_args: int, max_args: int,
                 flags: tuple[FlagSpec, ...], action: str) -> None:
        self.names = names
        self.options_help = options_help
        self.usage = usage
        self.min_args = min_args
        self.max_args = max_args
        self.flags = flags
        self.action = action


JSON = FlagSpec("bool", "json", ("-json", "j"), False, "Prefer JSON output")
FORCE_UNMOUNT = FlagSpec("bool", "force", ("-force", "f"), False, "Force the umount")


def _file(usage: str) -> FlagSpec:
    return FlagSpec("string", "file", ("-file", "f"), "", usage)


_MAPPINGS = (
    FlagSpec("bool", "hostuidmap", ("-hostuidmap",), False, "Force host UID map"),
    FlagSpec("bool", "hostgidmap", ("-hostgidmap",), False, "Force host GID map"),
    FlagSpec("string", "uidmap", ("-uidmap",), "", "UID map"),
    FlagSpec("string", "gidmap", ("-gidmap",), "", "GID map"),
    FlagSpec("string", "subuidmap", ("-subuidmap",), "", "subuid UID map for a user"),
    FlagSpec("string", "subgidmap", ("-subgidmap",), "", "subgid GID map for a group"),
)
_LABEL = FlagSpec("string", "label", ("-label", "l"), "", "Mount Label")
_READONLY = FlagSpec("bool", "readonly", ("-readonly", "r"), False, "Mark as read-only")
_METADATA = FlagSpec("string", "metadata", ("-metadata", "m"), "", "Metadata")
_METADATA_FILE = FlagSpec("string", "metadata_file", ("-metadata-file", "f"), "", "Metadata File")


def _names(usage: str) -> FlagSpec:
    return FlagSpec("list", "name", ("-name", "n"), "", usage)


def _id(usage: str) -> FlagSpec:
    return FlagSpec("string", "id", ("-id", "i"), "", usage)


_LAYER_ARGS = "[options [...]] [parentLayerNameOrID]"
_DIFF_ARGS = "[options [...]] layerNameOrID [referenceLayerNameOrID]"
_NAMES_ARGS = "[options [...]] imageOrContainerNameOrID"


def _data_commands(kind: str, arg: str, article: str, module: str) -> list[Command]:
    """list/get/get-size/get-digest/set data commands of images and containers."""
    return [
        Command((f"list-{kind}-data", f"list{kind}data"), f"[options [...]] {arg}",
                f"List data items that are attached to {article}", 1, 1, (JSON,),
                f"{module}:list_{kind}_data"),
        Command((f"get-{kind}-data", f"get{kind}data"), f"[options [...]] {arg} dataName",
                f"Get data that is attached to {article}", 2, 2, (_file("Write data to file"),),
                f"{module}:get_{kind}_data"),
        Command((f"get-{kind}-data-size", f"get{kind}datasize"), f"[options [...]] {arg} dataName",
                f"Get size of data that is attached to {article}", 2, 2, (),
                f"{module}:get_{kind}_data_size"),
        Command((f"get-{kind}-data-digest", f"get{kind}datadigest"), f"[options [...]] {arg} dataName",
                f"Get digest of data that is attached to {article}", 2, 2, (),
                f"{module}:get_{kind}_data_digest"),
    ]


COMMANDS: tuple[Command, ...] = (
    # check.go
    Command(("check",), "", "Check storage consistency", 0, 0, (
        JSON,
        FlagSpec("string", "max", ("-max", "m"), "24h", "Maximum allowed age for unreferenced layers"),
        FlagSpec("bool", "repair", ("-repair", "r"), False, "Remove damaged images and layers"),
        FlagSpec("bool", "force", ("-force", "f"), False, "Remove damaged containers"),
        FlagSpec("bool", "quick", ("-quick", "q"), False, "Perform only quick checks"),
    ), "check:check"),
    # config.go
    Command(("config",), "[configurationFile]", "Print storage library configuration as JSON", 0, 1, (),
            "storecmds:config"),
    # container.go
    Command(("container",), "[options [...]] containerNameOrID [...]", "Examine a container", 1, -1,
            (JSON,), "containers:container"),
    *_data_commands("container", "containerNameOrID", "an container", "data"),
    Command(("set-container-data", "setcontainerdata"), "[options [...]] containerNameOrID dataName",
            "Set data that is attached to an container", 2, 2, (_file("Read data from file"),),
            "data:set_container_data"),
    Command(("get-container-dir", "getcontainerdir"), "[options [...]] containerNameOrID",
            "Find the container's associated data directory", 1, 1, (), "data:get_container_dir"),
    Command(("get-container-run-dir", "getcontainerrundir"), "[options [...]] containerNameOrID",
            "Find the container's associated runtime directory", 1, 1, (), "data:get_container_run_dir"),
    Command(("container-parent-owners",), "[options [...]] containerNameOrID [...]",
            "Compute the set of unmapped parent UIDs and GIDs of the container", 1, -1, (JSON,),
            "containers:container_parent_owners"),
    # containers.go
    Command(("containers",), "[options [...]]", "List containers", 0, 0, (JSON,), "containers:containers"),
    # copy.go
    Command(("copy",), "[options [...]] [sourceLayerNameOrID:]/path [...] targetLayerNameOrID:/path",
            "Copy files or directories into a layer, possibly from another layer", 2, -1, (
                FlagSpec("string", "chown", ("-chown", "o"), "", "Set owner on new copies"),
                JSON,
            ), "storecmds:copy"),
    # create.go
    Command(("create-storage-layer",), _LAYER_ARGS, "Create a new layer only in the storage driver", 0, 1,
            (_LABEL, _id("Layer ID"), _READONLY, JSON, *_MAPPINGS), "layers:create_storage_layer"),
    Command(("create-layer", "createlayer"), _LAYER_ARGS, "Create a new layer", 0, 1,
            (_LABEL, _names("Layer name"), _id("Layer ID"), _READONLY, JSON, *_MAPPINGS),
            "layers:create_layer"),
    Command(("import-layer", "importlayer"), _LAYER_ARGS, "Import a new layer", 0, 1,
            (_LABEL, _names("Layer name"), _id("Layer ID"), _READONLY, JSON,
             _file("Read from file instead of stdin"), *_MAPPINGS), "layers:import_layer"),
    Command(("create-image", "createimage"), "[options [...]] topLayerNameOrID",
            "Create a new image using layers", 0, 1, (
                _names("Image name"), _id("Image ID"),
                FlagSpec("string", "digest", ("-digest", "d"), "", "Image Digest"),
                _METADATA, _METADATA_FILE, JSON,
            ), "images:create_image"),
    Command(("create-container", "createcontainer"), "[options [...]] parentImageNameOrID",
            "Create a new container from an image", 1, 1, (
                _names("Container name"),
                FlagSpec("bool", "volatile", ("-volatile",), False, "Mark as volatile"),
                _id("Container ID"), _METADATA, _METADATA_FILE, JSON, *_MAPPINGS,
            ), "containers:create_container"),
    # dedup.go
    Command(("dedup",), "", "Dedup all images", 0, 0, (
        JSON,
        FlagSpec("string", "hash_method", ("-hash-method",), "crc",
                 "Specify the hash function to use to detect identical files"),
    ), "storecmds:dedup"),
    # delete.go
    Command(("delete",), "[LayerOrImageOrContainerNameOrID [...]]",
            "Delete a layer or image or container, with no safety checks", 1, -1, (JSON,),
            "delete:delete"),
    Command(("delete-layer", "deletelayer"), "[LayerNameOrID [...]]", "Delete a layer, with safety checks",
            1, -1, (JSON,), "delete:delete_layer"),
    Command(("delete-image", "deleteimage"), "[ImageNameOrID [...]]", "Delete an image, with safety checks",
            1, -1, (FlagSpec("bool", "test", ("-test", "t"), False, "Only test removal"), JSON),
            "delete:delete_image"),
    Command(("delete-container", "deletecontainer"), "[ContainerNameOrID [...]]",
            "Delete a container, with safety checks", 1, -1, (JSON,), "delete:delete_container"),
    # diff.go
    Command(("changes",), _DIFF_ARGS, "Compare two layers", 1, 2, (JSON,), "diff:changes"),
    Command(("diffsize", "diff-size"), _DIFF_ARGS, "Compare two layers", 1, 2, (), "diff:diffsize"),
    Command(("diff",), _DIFF_ARGS, "Compare two layers", 1, 2, (
        _file("Write to file instead of stdout"),
        FlagSpec("bool", "uncompressed", ("-uncompressed", "u"), False, "Use no compression"),
        FlagSpec("bool", "gzip", ("-gzip", "c"), False, "Compress using gzip"),
        FlagSpec("bool", "bzip2", ("-bzip2", "-bz2", "b"), False,
                 "Compress using bzip2 (not currently supported)"),
        FlagSpec("bool", "xz", ("-xz", "x"), False, "Compress using xz (not currently supported)"),
    ), "diff:diff"),
    Command(("applydiff", "apply-diff"), _DIFF_ARGS, "Apply a diff to a layer", 1, 1,
            (_file("Read from file instead of stdin"),), "diff:applydiff"),
    Command(("applydiff-using-staging-dir",), "layerNameOrID directory",
            "Apply a diff to a layer using a staging directory", 2, 2, (), "diff:applydiff_staging"),
    # exists.go
    Command(("exists",), "[LayerOrImageOrContainerNameOrID [...]]",
            "Check if a layer or image or container exists", 1, -1, (
                FlagSpec("bool", "quiet", ("-quiet", "q"), False, "Don't print names"),
                FlagSpec("bool", "layer", ("-layer", "l"), False, "Only succeed if the match is a layer"),
                FlagSpec("bool", "image", ("-image", "i"), False, "Only succeed if the match is an image"),
                FlagSpec("bool", "container", ("-container", "c"), False,
                         "Only succeed if the match is a container"),
                JSON,
            ), "exists:exists"),
    # gc.go
    Command(("gc",), "", "Perform garbage collection", 0, 0, (JSON,), "storecmds:gc"),
    # image.go
    Command(("image",), "[options [...]] imageNameOrID [...]", "Examine an image", 1, -1, (JSON,),
            "images:image"),
    *_data_commands("image", "imageNameOrID", "an image", "data"),
    Command(("set-image-data", "setimagedata"), "[options [...]] imageNameOrID dataName",
            "Set data that is attached to an image (with sometimes wrong digest)", 2, 2,
            (_file("Read data from file"),), "data:set_image_data"),
    Command(("get-image-dir", "getimagedir"), "[options [...]] imageNameOrID",
            "Find the image's associated data directory", 1, 1, (), "data:get_image_dir"),
    Command(("get-image-run-dir", "getimagerundir"), "[options [...]] imageNameOrID",
            "Find the image's associated runtime directory", 1, 1, (), "data:get_image_run_dir"),
    # images.go
    Command(("images",), "[options [...]]", "List images", 0, 0,
            (JSON, FlagSpec("bool", "quiet", ("-quiet", "q"), False, "Only print IDs")), "images:images"),
    Command(("images-by-digest",), "[options [...]] DIGEST", "List images by digest", 1, 1,
            (JSON, FlagSpec("bool", "quiet", ("-quiet", "q"), False, "Only print IDs")),
            "images:images_by_digest"),
    # layer.go
    Command(("layer",), "[options [...]] layerNameOrID [...]", "Examine a layer", 1, -1, (JSON,),
            "layers:layer"),
    Command(("layer-parent-owners",), "[options [...]] layerNameOrID [...]",
            "Compute the set of unmapped parent UIDs and GIDs of the layer", 1, -1, (JSON,),
            "layers:layer_parent_owners"),
    Command(("list-layer-data", "listlayerdata"), "[options [...]] layerNameOrID",
            "List data items that are attached to a layer", 1, 1, (JSON,), "data:list_layer_data"),
    Command(("get-layer-data", "getlayerdata"), "[options [...]] layerID dataName",
            "Get data that is attached to a layer", 2, 2, (_file("Write data to file"),),
            "data:get_layer_data"),
    Command(("set-layer-data", "setlayerdata"), "[options [...]] layerID dataName",
            "Set data that is attached to a layer", 2, 2, (_file("Read data from file"),),
            "data:set_layer_data"),
    # layers.go
    Command(("layers",), "[options [...]]", "List layers", 0, 0, (
        FlagSpec("bool", "tree", ("-tree", "t"), False, "Use a tree"),
        FlagSpec("bool", "quick", ("-quick", "q"), False, "Just the IDs"),
        JSON,
    ), "layers:layers"),
    Command(("storage-layers",), "[options [...]]", "List storage layers", 0, 0, (JSON,),
            "layers:storage_layers"),
    # load.go (ours: podman's load; Go's CLI has none)
    Command(("load",), "[options [...]] -i INPUT",
            "Load images from an OCI layout, an OCI archive or a docker archive", 0, 0, (
                FlagSpec("string", "input", ("-input", "i"), "",
                         "Read from this OCI layout directory or archive"),
                FlagSpec("string", "platform", ("-platform",), "",
                         "Choose this OS/ARCH[/VARIANT] from an image index (default: this machine's)"),
                FlagSpec("bool", "quiet", ("-quiet", "q"), False, "Suppress the progress output"),
                JSON,
            ), "transfer:load"),
    # metadata.go
    Command(("metadata",), "[LayerOrImageOrContainerNameOrID [...]]",
            "Retrieve layer, image, or container metadata", 1, -1, (
                FlagSpec("bool", "quiet", ("-quiet", "q"), False, "Omit names and IDs"),
                JSON,
            ), "metadata:metadata"),
    Command(("set-metadata", "setmetadata"), "[options [...]] layerOrImageOrContainerNameOrID",
            "Set layer, image, or container metadata", 1, 1, (_METADATA, _METADATA_FILE),
            "metadata:set_metadata"),
    # mount.go
    Command(("mount",), "[options [...]] LayerOrContainerNameOrID", "Mount a layer or container", 1, -1, (
        FlagSpec("string", "opt", ("-opt", "o"), "", "Mount Options"),
        _LABEL,
        FlagSpec("bool", "read_only", ("-read-only", "-ro", "r"), False, "Mount image readonly"),
        JSON,
    ), "mount:mount"),
    Command(("unmount", "umount"), "LayerOrContainerNameOrID", "Unmount an image, layer or container",
            1, -1, (JSON, FORCE_UNMOUNT), "mount:unmount"),
    Command(("mounted",), "LayerOrContainerNameOrID", "Check if a file system is mounted", 1, -1, (JSON,),
            "mount:mounted"),
    # name.go
    Command(("get-names", "getnames"), _NAMES_ARGS, "Get layer, image, or container name or names", 1, 1,
            (JSON,), "names:get_names"),
    Command(("add-names", "addnames"), _NAMES_ARGS, "Add layer, image, or container name or names", 1, -1,
            (_names("Name to add"), JSON), "names:add_names"),
    Command(("remove-names", "removenames"), _NAMES_ARGS,
            "Remove layer, image, or container name or names", 1, -1,
            (_names("Name to remove"), JSON), "names:remove_names"),
    Command(("set-names", "setnames"), _NAMES_ARGS, "Set layer, image, or container name or names", 1, -1,
            (_names("New name"), JSON), "names:set_names"),
    # save.go (ours: podman's save; Go's CLI has none)
    Command(("save",), "[options [...]] -o OUTPUT imageNameOrID [...]",
            "Save images to an OCI layout, an OCI archive or a docker archive", 1, -1, (
                FlagSpec("string", "output", ("-output", "o"), "", "Write to this file or directory"),
                FlagSpec("string", "format", ("-format",), "docker-archive",
                         "oci-dir, oci-archive or docker-archive"),
                FlagSpec("string", "compression", ("-compression",), "gzip",
                         "Layer compression in OCI formats: gzip, zstd or none"),
                FlagSpec("bool", "quiet", ("-quiet", "q"), False, "Suppress the progress output"),
            ), "transfer:save"),
    # shutdown.go
    Command(("shutdown",), "", "Shut down layer storage", 0, 0, (
        JSON, FlagSpec("bool", "force", ("-force", "f"), False, "Unmount mounted layers first"),
    ), "storecmds:shutdown"),
    # status.go
    Command(("status",), "", "Check on graph driver status", 0, 0, (JSON,), "storecmds:status"),
    # unshare.go
    Command(("unshare",), "[command [...]]", "Run a command in a user namespace", 0, -1, (),
            "storecmds:unshare"),
    # version.go
    Command(("version",), "", "Return containers-storage version information", 0, 0, (JSON,),
            "storecmds:version"),
    # wipe.go
    Command(("wipe",), "", "Wipe all layers, images, and containers", 0, 0, (JSON,), "storecmds:wipe"),
)


def find(name: str) -> Command | None:
    for command in COMMANDS:
        if name in command.names:
            return command
    return None
