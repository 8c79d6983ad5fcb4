/*
 * kvmcaps: what KVM (Kernel-based Virtual Machine) offers on a POWER host, as key=value lines.
 *
 * Runs inside caskit's emulated POWER9 hosts (and on any ppc64 KVM host): the host's KVM mode
 * decides which interrupt controllers QEMU can put in the kernel for a pseries guest (XICS, the
 * eXternal Interrupt Controller Specification of POWER7/8, or XIVE, the eXternal Interrupt
 * Virtualization Engine of POWER9+), and QEMU's own monitor cannot tell the modes apart.
 * harness/kvmcaps.py parses the output; every line is `key=value`, values never contain '='
 * before the first one, so a reader needs no quoting rules.
 *
 * Capabilities are asked twice: on /dev/kvm (`sys.`) and on a VM of the HV type (`vm.`),
 * because PowerPC KVM answers some of them per VM type (an HV VM and a PR VM differ) and QEMU
 * asks the VM. Device creation is tried with KVM_CREATE_DEVICE_TEST (does KVM know the device
 * type at all) and for real (can this VM have one now).
 *
 * Built statically with Debian's powerpc64le cross compiler when the L1 image is built.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <linux/kvm.h>

/* The capability numbers are ABI (include/uapi/linux/kvm.h): fixed once merged. They are spelled
 * out so that the probe builds against older headers too; where the header knows one, the
 * compiler checks that both agree. */
#define CAP(name, num) {#name, num}
struct cap { const char *name; int num; };
static const struct cap caps[] = {
    CAP(KVM_CAP_NR_VCPUS, 9),
    CAP(KVM_CAP_SPAPR_TCE, 63),
    CAP(KVM_CAP_PPC_SMT, 64),
    CAP(KVM_CAP_MAX_VCPUS, 66),
    CAP(KVM_CAP_PPC_PAPR, 68),
    CAP(KVM_CAP_ONE_REG, 70),
    CAP(KVM_CAP_PPC_GET_SMMU_INFO, 78),
    CAP(KVM_CAP_PPC_HTAB_FD, 84),
    CAP(KVM_CAP_DEVICE_CTRL, 89),
    CAP(KVM_CAP_PPC_RTAS, 91),
    CAP(KVM_CAP_IRQ_XICS, 92),
    CAP(KVM_CAP_SPAPR_MULTITCE, 94),
    CAP(KVM_CAP_PPC_FIXUP_HCALL, 103),
    CAP(KVM_CAP_PPC_ENABLE_HCALL, 104),
    CAP(KVM_CAP_SPAPR_TCE_64, 125),
    CAP(KVM_CAP_PPC_HTM, 132),
    CAP(KVM_CAP_PPC_MMU_RADIX, 134),
    CAP(KVM_CAP_PPC_MMU_HASH_V3, 135),
    CAP(KVM_CAP_PPC_FWNMI, 146),
    CAP(KVM_CAP_PPC_SMT_POSSIBLE, 147),
    CAP(KVM_CAP_PPC_GET_CPU_CHAR, 151),
    CAP(KVM_CAP_PPC_NESTED_HV, 160),
    CAP(KVM_CAP_PPC_IRQ_XIVE, 169),
    CAP(KVM_CAP_PPC_SECURE_GUEST, 181),
    CAP(KVM_CAP_PPC_DAWR1, 194),
    CAP(KVM_CAP_PPC_RPT_INVALIDATE, 202),
    CAP(KVM_CAP_PPC_AIL_MODE_3, 210),
};

#define SAME(name, num) _Static_assert(name == num, #name " is not " #num)
#ifdef KVM_CAP_IRQ_XICS
SAME(KVM_CAP_IRQ_XICS, 92);
#endif
#ifdef KVM_CAP_PPC_NESTED_HV
SAME(KVM_CAP_PPC_NESTED_HV, 160);
#endif
#ifdef KVM_CAP_PPC_IRQ_XIVE
SAME(KVM_CAP_PPC_IRQ_XIVE, 169);
#endif
#ifdef KVM_CAP_PPC_HTM
SAME(KVM_CAP_PPC_HTM, 132);
#endif
#ifdef KVM_CAP_PPC_FWNMI
SAME(KVM_CAP_PPC_FWNMI, 146);
#endif
#ifdef KVM_CAP_PPC_DAWR1
SAME(KVM_CAP_PPC_DAWR1, 194);
#endif
#ifdef KVM_CAP_PPC_AIL_MODE_3
SAME(KVM_CAP_PPC_AIL_MODE_3, 210);
#endif

/* enum kvm_device_type, KVM_VM_PPC_HV: ABI as well. */
#define DEV_TYPE_XICS 3
#define DEV_TYPE_XIVE 9
#define VM_PPC_HV 1
#define VM_PPC_PR 2
SAME(KVM_DEV_TYPE_XICS, DEV_TYPE_XICS);
SAME(KVM_DEV_TYPE_XIVE, DEV_TYPE_XIVE);
SAME(KVM_VM_PPC_HV, VM_PPC_HV);
SAME(KVM_VM_PPC_PR, VM_PPC_PR);

static const char *err_name(int e)
{
    switch (e) {
    case ENODEV: return "ENODEV";
    case EEXIST: return "EEXIST";
    case EINVAL: return "EINVAL";
    case ENOENT: return "ENOENT";
    case ENXIO: return "ENXIO";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOMEM: return "ENOMEM";
    case EBUSY: return "EBUSY";
    case ENOTTY: return "ENOTTY";
    default: return "errno";
    }
}

/* `error:<NAME>:<number>`: the symbolic name for the reader, the number for anything unnamed. */
static void print_err(const char *key, int e)
{
    printf("%s=error:%s:%d\n", key, err_name(e), e);
}

static void check_caps(const char *prefix, int fd)
{
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
        int r = ioctl(fd, KVM_CHECK_EXTENSION, caps[i].num);
        if (r < 0)
            printf("%s.%s=error:%s:%d\n", prefix, caps[i].name, err_name(errno), errno);
        else
            printf("%s.%s=%d\n", prefix, caps[i].name, r);
    }
}

static void try_device(int vm, const char *prefix, const char *name, unsigned type)
{
    char key[64];
    struct kvm_create_device d = {.type = type, .flags = KVM_CREATE_DEVICE_TEST};

    snprintf(key, sizeof(key), "%s.%s.test", prefix, name);
    if (ioctl(vm, KVM_CREATE_DEVICE, &d) < 0)
        print_err(key, errno);
    else
        printf("%s=ok\n", key);

    /* For real: one interrupt device per VM, so every attempt uses a VM of its own. */
    snprintf(key, sizeof(key), "%s.%s.create", prefix, name);
    memset(&d, 0, sizeof(d));
    d.type = type;
    if (ioctl(vm, KVM_CREATE_DEVICE, &d) < 0) {
        print_err(key, errno);
    } else {
        printf("%s=ok\n", key);
        close((int)d.fd);
    }
}

/* First line of a small text file, or nothing when it cannot be read. */
static void print_file(const char *key, const char *path)
{
    char buf[256];
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("%s=missing\n", key);
        return;
    }
    if (fgets(buf, sizeof(buf), f)) {
        buf[strcspn(buf, "\n")] = 0;
        printf("%s=%s\n", key, buf);
    }
    fclose(f);
}

/* The platform lines of /proc/cpuinfo (PowerNV or pSeries, its firmware and MMU) and the first
 * CPU's name. */
static void print_platform(void)
{
    char line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    int cpus = 0;
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        char *v = strchr(line, ':');
        if (!v)
            continue;
        *v++ = 0;
        line[strcspn(line, " \t")] = 0;  /* the key, without the padding before ':' */
        v += strspn(v, " \t");
        v[strcspn(v, "\n")] = 0;
        if (!strcmp(line, "processor"))
            cpus++;
        else if (!strcmp(line, "cpu") && cpus == 1)
            printf("cpu=%s\n", v);
        else if (!strcmp(line, "platform") || !strcmp(line, "model") || !strcmp(line, "firmware") ||
                 !strcmp(line, "MMU"))
            printf("%s=%s\n", line, v);
    }
    printf("cpus=%d\n", cpus);
    fclose(f);
}

/* Kernel lines that say what the probe cannot ask KVM: the XIVE driver's ("xive: ...", which
 * backend it runs on: native on bare metal with OPAL, spapr under a hypervisor) and the PAPR
 * nested API's (Linux 6.7+ logs "nestedv2 get capabilities hcall failed, falling back to
 * nestedv1" when the hypervisor has no v2, and "KVM-NESTEDv2: ..." while it runs L2s on v2).
 * Read from the kernel log buffer directly, so that no dmesg program is needed. */
static void print_kernel_lines(void)
{
    static char buf[1 << 20];
    static const struct { const char *needle, *key; } want[] = {
        {"xive: ", "xive"}, {"nestedv", "nested"}, {"NESTEDv", "nested"},
    };
    int count[2] = {0, 0};
    int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, sizeof(buf) - 1);
    if (n < 0) {
        print_err("dmesg", errno);
        return;
    }
    buf[n] = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
            char *x = strstr(line, want[i].needle);
            int k = i == 0 ? 0 : 1;
            if (x && count[k] < 20) {  /* KVM-NESTEDv2 repeats per L2: the first ones say it */
                printf("dmesg.%s.%d=%s\n", want[i].key, count[k]++, i == 0 ? x : line);
                break;
            }
        }
    }
}

/* One VM type: its caps under `prefix.`, KVM_PPC_GET_CPU_CHAR, and the interrupt devices, each
 * on a fresh VM of that type (one interrupt device per VM). HV keeps the keys it always had (vm.hv,
 * vm., device.); PR's are vm.pr, vm_pr. and device_pr. */
static void probe_vm(int kvm, unsigned type, const char *vmkey, const char *prefix, const char *devp)
{
    char key[64];
    int vm = ioctl(kvm, KVM_CREATE_VM, type);
    if (vm < 0) {
        print_err(vmkey, errno);
        return;
    }
    printf("%s=ok\n", vmkey);
    check_caps(prefix, vm);

    struct kvm_ppc_cpu_char cc;
    snprintf(key, sizeof(key), "%s.cpu_char", prefix);
    if (ioctl(vm, KVM_PPC_GET_CPU_CHAR, &cc) < 0)
        print_err(key, errno);
    else
        printf("%s=character:%#llx/%#llx behaviour:%#llx/%#llx\n", key,
               (unsigned long long)cc.character, (unsigned long long)cc.character_mask,
               (unsigned long long)cc.behaviour, (unsigned long long)cc.behaviour_mask);
    close(vm);

    static const struct { const char *name; unsigned type; } devs[] = {
        {"xics", DEV_TYPE_XICS}, {"xive", DEV_TYPE_XIVE},
    };
    for (size_t i = 0; i < sizeof(devs) / sizeof(devs[0]); i++) {
        int v = ioctl(kvm, KVM_CREATE_VM, type);
        if (v < 0) {
            print_err(vmkey, errno);
            continue;
        }
        try_device(v, devp, devs[i].name, devs[i].type);
        close(v);
    }
}

int main(void)
{
    printf("probe=kvmcaps 1\n");
    print_platform();
    printf("opal=%d\n", access("/proc/device-tree/ibm,opal", F_OK) == 0);
    print_file("kvm_hv.nested", "/sys/module/kvm_hv/parameters/nested");
    printf("module.kvm_hv=%d\n", access("/sys/module/kvm_hv", F_OK) == 0);
    printf("module.kvm_pr=%d\n", access("/sys/module/kvm_pr", F_OK) == 0);
    print_kernel_lines();
    /* The host's page size: HV KVM backs a guest's HPT pages with host pages, so a 4 KiB host
     * cannot give an L2 64 KiB pages (QEMU: "Can't support 64 kiB guest pages with 4 kiB host
     * pages with this KVM implementation"). Debian's 6.12 ppc64el kernel uses 4 KiB pages. */
    printf("page_size=%ld\n", sysconf(_SC_PAGESIZE));
    struct utsname u;
    if (uname(&u) == 0)
        printf("kernel=%s\n", u.release);

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        print_err("dev_kvm", errno);
        return 0;  /* no KVM is an answer, not a failure of the probe */
    }
    printf("dev_kvm=ok\n");
    printf("api_version=%d\n", ioctl(kvm, KVM_GET_API_VERSION, 0));
    check_caps("sys", kvm);

    probe_vm(kvm, VM_PPC_HV, "vm.hv", "vm", "device");
    /* PR KVM (kvm_pr) answers for its own VM type only, and /sys/module/kvm_pr is missing when
     * it is built in (measured in caskit's PR L1): creating a PR VM is the test. */
    probe_vm(kvm, VM_PPC_PR, "vm.pr", "vm_pr", "device_pr");
    close(kvm);
    return 0;
}
